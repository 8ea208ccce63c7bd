"""The archive of a whole appliance: a gzip-compressed tar with a manifest.

Members:

- `appliance.db`: the SQLite database, an online copy in rollback-journal mode;
- `data/<path>`: the files of the data directory (secrets/, uploaded files), with the
  same relative paths;
- `instance-backups/<path>`: the instance backup store, when asked for;
- `manifest.json`, last: the format, the appliance's version, the schema (the last
  migration applied, and the whole list), when it was made, and each other member's size
  and sha256.

Reading an archive (`unpack`) checks every member against the manifest as it streams
through, so a changed byte anywhere, a missing or an extra member, or a damaged gzip
stream is refused (`ArchiveInvalid`) before anything is used. Names are checked too: only
regular files, with relative paths that stay inside their place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import sqlite3
import tarfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from appliance import __version__, db
from appliance.errors import ApplianceError

FORMAT = 1
KIND = "appliance-backup"
MANIFEST = "manifest.json"
DATABASE = "appliance.db"
DATA_PREFIX = "data/"
INSTANCE_BACKUPS_PREFIX = "instance-backups/"
MANIFEST_MAX_BYTES = 16 * 1024 * 1024
CHUNK = 1024 * 1024


class BackupError(ApplianceError):
    """A backup or restore of the appliance cannot be done; the message says why."""

    code = "backup_failed"


class ArchiveInvalid(BackupError):
    """The archive is damaged, was changed, or is not an appliance archive."""

    code = "archive_invalid"


@dataclass(frozen=True)
class Written:
    path: Path
    size_bytes: int
    sha256: str  # of the archive file
    manifest: dict[str, Any]


class _HashingWriter(io.RawIOBase):
    """A file that hashes and counts what goes through it (the archive being written)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.raw.write(view)
        self.digest.update(view)
        self.size += len(view)
        return len(view)


class _HashingReader(io.RawIOBase):
    """A member's source file that hashes what tarfile reads of it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def write(target: Path, database_copy: Path, files: Iterable[tuple[str, Path]],
          manifest: dict[str, Any]) -> Written:
    """Write the archive to `target` (created 0600; an existing file is never replaced:
    FileExistsError), from the database copy and `(member name, file)` pairs; `manifest`
    gets the members added. Written beside the target and linked into place at the end,
    so `target` is complete whenever it exists."""
    partial = target.with_name(f".{target.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    members: list[dict[str, Any]] = []
    try:
        with os.fdopen(fd, "wb") as raw:
            hashed = _HashingWriter(raw)
            with tarfile.open(fileobj=hashed, mode="w:gz", compresslevel=6,
                              format=tarfile.PAX_FORMAT) as tar:
                for name, path in [(DATABASE, database_copy), *files]:
                    members.append(_add(tar, name, path))
                body = json.dumps({**manifest, "members": members}, indent=2).encode()
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mode = len(body), 0o600
                info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
                tar.addfile(info, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.link(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return Written(target, hashed.size, hashed.digest.hexdigest(),
                   {**manifest, "members": members})


def _add(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as source:
        stat = os.fstat(source.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = stat.st_size, 0o600, int(stat.st_mtime)
        reader = _HashingReader(source)
        tar.addfile(info, reader)  # a file that shrinks meanwhile: OSError, nothing written
    return {"name": name, "size": stat.st_size, "sha256": reader.digest.hexdigest()}


def base_manifest(migrations: list[str], instance_backups: bool,
                  created_at: dt.datetime) -> dict[str, Any]:
    return {"format": FORMAT, "kind": KIND, "appliance_version": __version__,
            "schema": migrations[-1] if migrations else None, "migrations": migrations,
            "created_at": created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "database": DATABASE, "instance_backups": instance_backups}


def applied_migrations(database_file: Path) -> list[str]:
    """The migrations recorded in a SQLite file, in order (none without the table)."""
    conn = sqlite3.connect(f"file:{database_file}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                             "AND name = 'schema_migration'").fetchone()
        if found is None:
            return []
        names = [row[0] for row in conn.execute("SELECT name FROM schema_migration")]
    finally:
        conn.close()
    return sorted(names, key=lambda name: (_number(name), name))


def _number(name: str) -> int:
    digits = name.split("_", 1)[0]
    return int(digits) if digits.isdigit() else -1


def check_integrity(database_file: Path, what: str = "the database in the archive") -> None:
    """ArchiveInvalid unless SQLite's integrity_check of the file answers ok; `what` names
    the file in the message."""
    try:
        conn = sqlite3.connect(f"file:{database_file}?mode=ro", uri=True)
        try:
            rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise ArchiveInvalid(f"{what} cannot be read: {exc}") from None
    if rows != ["ok"]:
        raise ArchiveInvalid(f"{what} fails SQLite's integrity check: " + "; ".join(rows[:5]))


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return (bool(name) and not path.is_absolute() and ".." not in path.parts
            and "" not in name.split("/") and "\\" not in name and "\0" not in name)


Place = Callable[[str], Path | None]


def unpack(archive: Path, place: Place) -> dict[str, Any]:
    """Read `archive` once from start to end, checking every member against the manifest;
    a member for which `place(name)` gives a path is written there (0600, directories
    0700), the others are only checked. Returns the manifest.

    Raises ArchiveInvalid when the archive is damaged, changed, or not an appliance
    archive; files already written are then left for the caller to remove.
    """
    seen: dict[str, tuple[int, str]] = {}
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            for info in tar:
                if not info.isfile() or not _safe_name(info.name) or info.name in seen:
                    raise ArchiveInvalid(f"unexpected member {info.name!r} in the archive")
                source = tar.extractfile(info)
                assert source is not None  # a regular file
                if info.name == MANIFEST:
                    manifest = _read_manifest(source.read(MANIFEST_MAX_BYTES + 1))
                    seen[MANIFEST] = (0, "")
                    continue
                seen[info.name] = _copy(source, place(info.name))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError | PermissionError):
            raise BackupError(f"cannot read {archive}: {exc}") from None
        raise ArchiveInvalid(f"{archive} is damaged: {exc}") from None
    if manifest is None:
        raise ArchiveInvalid(f"{archive} has no {MANIFEST}: not an appliance backup")
    _compare(manifest, seen)
    return manifest


def _read_manifest(body: bytes) -> dict[str, Any]:
    if len(body) > MANIFEST_MAX_BYTES:
        raise ArchiveInvalid("the manifest is too large")
    try:
        manifest = json.loads(body)
    except ValueError:
        raise ArchiveInvalid("the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ArchiveInvalid("the manifest is not an appliance backup's")
    if manifest.get("format") != FORMAT:
        raise ArchiveInvalid(f"archive format {manifest.get('format')!r} is not known "
                             f"to appliance {__version__} (it reads format {FORMAT})")
    if not isinstance(manifest.get("members"), list) \
            or not isinstance(manifest.get("migrations"), list):
        raise ArchiveInvalid("the manifest lists no members or migrations")
    return manifest


def _copy(source: IO[bytes], target: Path | None) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    out = None
    try:
        if target is not None:
            db.private_dir(target.parent)
            out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc}") from None
    try:
        while chunk := source.read(CHUNK):  # a damaged stream raises here (the caller's)
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                try:
                    out.write(chunk)
                except OSError as exc:  # a full disk is not a damaged archive
                    raise BackupError(f"cannot write {target}: {exc}") from None
    finally:
        if out is not None:
            try:
                out.close()
            except OSError as exc:
                raise BackupError(f"cannot write {target}: {exc}") from None
    return size, digest.hexdigest()


def _compare(manifest: dict[str, Any], seen: dict[str, tuple[int, str]]) -> None:
    listed: dict[str, tuple[Any, Any]] = {}
    for member in manifest["members"]:
        if not isinstance(member, dict) or not isinstance(member.get("name"), str):
            raise ArchiveInvalid("the manifest's member list is malformed")
        listed[member["name"]] = (member.get("size"), member.get("sha256"))
    found = {name: value for name, value in seen.items() if name != MANIFEST}
    if DATABASE not in listed:
        raise ArchiveInvalid(f"the manifest lists no {DATABASE}")
    missing, extra = sorted(listed.keys() - found.keys()), sorted(found.keys() - listed.keys())
    if missing:
        raise ArchiveInvalid(f"{missing[0]} is listed in the manifest but missing from the "
                             "archive")
    if extra:
        raise ArchiveInvalid(f"{extra[0]} is in the archive but not in its manifest")
    for name in sorted(listed):
        if found[name] != listed[name]:
            raise ArchiveInvalid(f"{name} does not match its checksum in the manifest: the "
                                 "archive is damaged or was changed")


def known_migrations() -> list[str]:
    """The migrations this code has, in order."""
    names = [path.stem for path in db.MIGRATIONS_DIR.glob("[0-9]*.py")]
    return sorted(names, key=lambda name: (_number(name), name))


def check_schema(manifest: dict[str, Any]) -> None:
    """BackupError when the archive's database has a migration this code does not know
    (made by a newer appliance: this one cannot run it)."""
    known = set(known_migrations())
    unknown = [name for name in manifest["migrations"] if name not in known]
    if unknown:
        latest = known_migrations()[-1] if known else "none"
        raise BackupError(
            f"the archive's schema ({manifest.get('schema')}) is newer than this appliance "
            f"knows (up to {latest}; unknown: {', '.join(unknown)}). It was made by "
            f"appliance {manifest.get('appliance_version')}: restore it with that version "
            "or a newer one.")


def check_database(database_file: Path, manifest: dict[str, Any]) -> None:
    """ArchiveInvalid unless the unpacked database passes SQLite's integrity check and
    records the migrations the manifest says."""
    check_integrity(database_file)
    if applied_migrations(database_file) != list(manifest["migrations"]):
        raise ArchiveInvalid("the database's migrations differ from the manifest's")
