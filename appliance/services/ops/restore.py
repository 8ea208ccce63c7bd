"""Restoring an archive of the appliance (services/ops/archive.py) into a data directory.

The order makes a refused restore leave everything as it was:

1. refuse when `appliance serve` holds the directory's lock (server_lock), or when the
   database the settings name is not the data directory's own SQLite file;
2. unpack the whole archive into a staging directory beside the target
   (`.<name>.restore-<time>-...`), checking every member against the manifest; refuse an
   archive whose schema is newer than the migrations this code has, and a database that
   fails SQLite's integrity check or does not record the manifest's migrations; on any
   refusal the staging directory is removed and nothing else was touched;
3. move the existing data directory aside to `<name>.before-restore-<time>` (never
   deleted; an empty one is removed instead), and move the staging directory into place;
4. carry the backup store over: when the archive has no instance backups, the old
   directory's `backups/` (instance backups, pre-migrate copies, archives) moves into the
   new one. With instance backups in the archive and BACKUP_DIR outside the data
   directory, missing files are written there and identical ones kept; a different file
   of the same name refuses the restore at step 2.

The caller then builds the app on the directory, which applies pending migrations (with
a pre-migrate copy, db.migrate).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import db
from appliance.services.ops import archive, selfbackup, server_lock
from appliance.services.ops.archive import BackupError

STAGED_INSTANCE_BACKUPS = ".instance-backups"


@dataclass(frozen=True)
class Restored:
    data_dir: Path
    manifest: dict[str, Any]
    moved_aside: Path | None  # where the previous data directory now is
    backups_carried: bool  # its backups/ moved into the restored directory


def _database_target(settings: dict[str, Any], data_dir: Path) -> Path:
    url = settings["DATABASE_URL"]
    if not url:
        return data_dir / "appliance.db"
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):]).expanduser().resolve()
        if data_dir in path.parents:
            return path
    raise BackupError("DATABASE_URL names a database outside the data directory: restore "
                      "works on the data directory's own SQLite database (unset "
                      "DATABASE_URL, or point it inside the data directory).")


def _refuse_when_served(data_dir: Path) -> None:
    pid = server_lock.holder(data_dir) if data_dir.is_dir() else None
    if pid is not None:
        raise BackupError(f"appliance serve (pid {pid or '?'}) is running on {data_dir}: stop "
                          "it before restoring")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(archive.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def restore(path: Path, settings: dict[str, Any], now: dt.datetime | None = None) -> Restored:
    """Restore the archive at `path` into the data directory the settings name (see the
    module's contract). Raises BackupError (ArchiveInvalid for a damaged or changed
    archive) with the data directory untouched."""
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    data_dir = Path(settings["DATA_DIR"]).expanduser().resolve()
    database_target = _database_target(settings, data_dir)
    _refuse_when_served(data_dir)
    store = selfbackup.instance_store(settings)
    store_inside = data_dir in store.parents
    path = path.expanduser().resolve()

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.restore-{stamp}-",
                                    dir=data_dir.parent))  # 0700, beside: renamed in place
    try:
        def place(name: str) -> Path | None:
            if name == archive.DATABASE:
                return staging / database_target.relative_to(data_dir)
            if name.startswith(archive.DATA_PREFIX):
                return staging / name[len(archive.DATA_PREFIX):]
            if name.startswith(archive.INSTANCE_BACKUPS_PREFIX):
                rest = name[len(archive.INSTANCE_BACKUPS_PREFIX):]
                if store_inside:
                    return staging / store.relative_to(data_dir) / rest
                return staging / STAGED_INSTANCE_BACKUPS / rest
            raise archive.ArchiveInvalid(f"unexpected member {name!r} in the archive")

        manifest = archive.unpack(path, place)
        archive.check_schema(manifest)
        archive.check_database(place(archive.DATABASE) or staging, manifest)
        outside = _outside_store_files(staging, store) if not store_inside else []
        _refuse_when_served(data_dir)  # it may have started meanwhile
        moved_aside = _move_aside(data_dir, stamp)
        try:
            staging.rename(data_dir)
        except OSError:
            if moved_aside is not None:
                moved_aside.rename(data_dir)  # as it was
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for source, target in outside:
        db.private_dir(target.parent)
        shutil.move(data_dir / source.relative_to(staging), target)  # staging is data_dir now
    shutil.rmtree(data_dir / STAGED_INSTANCE_BACKUPS, ignore_errors=True)
    carried = False
    old_backups = moved_aside / "backups" if moved_aside else None
    if old_backups is not None and old_backups.is_dir() and not manifest["instance_backups"] \
            and not (data_dir / "backups").exists():
        old_backups.rename(data_dir / "backups")
        carried = True
    return Restored(data_dir, manifest, moved_aside, carried)


def _outside_store_files(staging: Path, store: Path) -> list[tuple[Path, Path]]:
    """The staged instance backups to move into a store outside the data directory: those
    it lacks. BackupError when it has a different file of the same name."""
    staged = staging / STAGED_INSTANCE_BACKUPS
    moves = []
    for root, _dirs, names in os.walk(staged):
        for name in names:
            source = Path(root) / name
            target = store / source.relative_to(staged)
            if not target.exists():
                moves.append((source, target))
            elif not target.is_file() or _sha256(target) != _sha256(source):
                raise BackupError(f"{target} exists and differs from the archive's copy: move "
                                  "it away first")
    return moves


def _move_aside(data_dir: Path, stamp: str) -> Path | None:
    if not data_dir.exists():
        return None
    if not data_dir.is_dir():
        raise BackupError(f"{data_dir} is not a directory")
    if not any(data_dir.iterdir()):
        data_dir.rmdir()
        return None
    aside = data_dir.with_name(f"{data_dir.name}.before-restore-{stamp}")
    if aside.exists():
        raise BackupError(f"{aside} exists already; try again in a second")
    data_dir.rename(aside)
    return aside
