"""Backups of the appliance itself: `appliance backup` and the daily `self_backup` task.

What goes into an archive (services/ops/archive.py has the format):

- the database, copied online (SQLite's backup API, in one read transaction) into a
  temporary file beside the archive, so the server keeps serving and writing meanwhile
  and the copy holds every transaction committed before it began;
- every regular file of the data directory (`secrets/`, uploaded files such as branding),
  except the database's own files, `serve.lock`, and the backup stores: DATA_DIR/backups
  (instance backups, pre-migrate copies, and these archives by default), BACKUP_DIR and
  SELF_BACKUP_DIR;
- with `with_instance_backups`, the instance backup store (BACKUP_DIR, by default
  DATA_DIR/backups), without the appliance's own archives and pre-migrate copies.

Only a SQLite database can be copied so; with another DATABASE_URL, `create_backup`
refuses (BackupError) and the daily task does nothing.

The daily task (`run_scheduled`, every 15 minutes) makes one archive a UTC day into
SELF_BACKUP_DIR (default DATA_DIR/backups/appliance) unless SELF_BACKUP_SCHEDULE is off,
then deletes all but the newest SELF_BACKUP_KEEP archives there. A failed run is retried
an hour later; the first failure since the last success, and then at most one a day, is
told to every administrator (`appliance.backup_failed` event, notification and mail).
Every run, scheduled or `appliance backup`, is recorded as a `SelfBackupRun` row.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import __version__, config, db
from appliance.db import database
from appliance.models import SelfBackupRun
from appliance.services import clock
from appliance.services.accounts.admin import require_admin
from appliance.services.events import outbox
from appliance.services.ops import archive, server_lock
from appliance.services.ops.archive import BackupError
from appliance.services.principal import Principal

log = logging.getLogger("appliance.selfbackup")

RETRY_AFTER = dt.timedelta(hours=1)
RUNS_KEPT = 100  # rows of SelfBackupRun
ERROR_MAX = 2000
_ARCHIVE = re.compile(r"^appliance-(?P<version>[^/]+?)-(?P<stamp>\d{8}T\d{6}Z)(?:-(?P<n>\d+))?"
                      r"\.tar\.gz$")
_PRE_MIGRATE = re.compile(r"^pre-migrate-.*\.sqlite3$")
DATABASE_SUFFIXES = ("", "-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Result:
    path: Path
    size_bytes: int
    sha256: str
    manifest: dict[str, Any]
    secret_key_included: bool  # False: SECRET_KEY comes from elsewhere; keep it too


@dataclass(frozen=True)
class Status:
    schedule: str
    keep: int
    directory: Path
    database_supported: bool
    last_run: SelfBackupRun | None
    last_success: SelfBackupRun | None
    archives: list[tuple[Path, int, dt.datetime]]  # newest first: file, size, made at


# Where things are -------------------------------------------------------------------------


def _settings() -> dict[str, Any]:
    return config.active()


def data_dir(settings: dict[str, Any]) -> Path:
    return Path(settings["DATA_DIR"]).expanduser().resolve()


def archive_dir(settings: dict[str, Any]) -> Path:
    """SELF_BACKUP_DIR, or DATA_DIR/backups/appliance."""
    chosen = settings["SELF_BACKUP_DIR"]
    if chosen:
        return Path(chosen).expanduser().resolve()
    return data_dir(settings) / "backups" / "appliance"


def instance_store(settings: dict[str, Any]) -> Path:
    """The instance backup store: BACKUP_DIR where that setting exists and is set, else
    DATA_DIR/backups."""
    chosen = settings.get("BACKUP_DIR")
    if chosen:
        return Path(chosen).expanduser().resolve()
    return data_dir(settings) / "backups"


def database_file() -> Path | None:
    return db.sqlite_path(database.obj)


def _stamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def archive_name(now: dt.datetime, attempt: int = 0) -> str:
    return f"appliance-{__version__}-{_stamp(now)}{f'-{attempt}' if attempt else ''}.tar.gz"


def _next_number(folder: Path, started: dt.datetime) -> int:
    """The number an archive made at `started` takes: past the highest of that second (a
    name freed by pruning is never reused: it would sort as the oldest)."""
    taken = [int(m["n"] or 0) for m in map(_ARCHIVE.match, os.listdir(folder))
             if m and m["stamp"] == _stamp(started)]
    return max(taken) + 1 if taken else 0


# Making an archive ------------------------------------------------------------------------


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _walk(top: Path, skip_dirs: list[Path], skip_files: set[Path]) -> Iterator[Path]:
    """Regular files under `top` (symlinks are not followed nor taken), sorted."""
    for root, dirs, names in os.walk(top):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not any(_inside(here / d, s) for s in skip_dirs))
        for name in sorted(names):
            path = here / name
            if path not in skip_files and path.is_file() and not path.is_symlink():
                yield path


def _members(settings: dict[str, Any], source: Path, output: Path, work: Path,
             with_instance_backups: bool) -> list[tuple[str, Path]]:
    top = data_dir(settings)
    store, own = instance_store(settings), archive_dir(settings)
    skip_files = {source.with_name(source.name + suffix) for suffix in DATABASE_SUFFIXES}
    skip_files |= {output, output.with_name(f".{output.name}.partial"),
                   top / server_lock.LOCK_NAME}
    skip_dirs = [top / "backups", store, own, work]
    members = [(archive.DATA_PREFIX + path.relative_to(top).as_posix(), path)
               for path in _walk(top, skip_dirs, skip_files)]
    if with_instance_backups and store.is_dir():
        for path in _walk(store, [own, work], skip_files):
            if path.parent == store and _PRE_MIGRATE.match(path.name):
                continue  # the pre-migrate copies of the database are not instance backups
            members.append((archive.INSTANCE_BACKUPS_PREFIX
                            + path.relative_to(store).as_posix(), path))
    return members


def check_source(settings: dict[str, Any]) -> None:
    """BackupError unless the settings name a SQLite database that exists (checked before
    an app is built on them, which would create an empty data directory)."""
    url = settings["DATABASE_URL"]
    if url and not url.startswith("sqlite:///"):
        raise BackupError("DATABASE_URL names a database other than SQLite: back it up with "
                          "its own tools (pg_dump for PostgreSQL); `appliance backup` copies "
                          "SQLite only.")
    path = Path(url[len("sqlite:///"):]) if url else data_dir(settings) / "appliance.db"
    if not path.is_file():
        raise BackupError(f"there is no database at {path}: nothing to back up")


def create_backup(output: Path | None = None, *, with_instance_backups: bool = False,
                  trigger: str = "manual") -> Result:
    """Write an archive of the appliance (see the module's contract) to `output`, or to a
    new `appliance-<version>-<UTC time>.tar.gz` in SELF_BACKUP_DIR; record the run.

    The archive is 0600 (it holds the secrets) and complete whenever it exists: it is
    written beside its place and linked there at the end, never over an existing file.
    Raises BackupError (the message says why) and records the failure.
    """
    started = clock.now()
    try:
        result = _create(output, with_instance_backups, started)
    except Exception as exc:
        if not isinstance(exc, BackupError | OSError | sqlite3.Error):
            log.exception("unexpected error while backing up the appliance")
        _record(trigger, started, None, _describe(exc))
        raise BackupError(_describe(exc)) from exc
    _record(trigger, started, result, "")
    return result


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BackupError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def _create(output: Path | None, with_instance_backups: bool, started: dt.datetime) -> Result:
    settings = _settings()
    source = database_file()
    if source is None:
        raise BackupError("DATABASE_URL names a database other than SQLite: back it up with "
                          "its own tools (pg_dump for PostgreSQL).")
    if output is None:
        folder = db.private_dir(archive_dir(settings))
    else:
        output = output.expanduser().resolve()
        folder = output.parent
    work = Path(tempfile.mkdtemp(prefix=".appliance-backup-", dir=folder))
    try:
        copy = work / archive.DATABASE
        db.copy_sqlite(source, copy)
        archive.check_integrity(copy, "the copy of the database")  # a damaged one fails
        migrations = archive.applied_migrations(copy)
        manifest = archive.base_manifest(migrations, with_instance_backups, started)
        for attempt in itertools.count(_next_number(folder, started)):
            target = output or folder / archive_name(started, attempt)
            members = _members(settings, source, target, work, with_instance_backups)
            try:
                written = archive.write(target, copy, members, manifest)
                break
            except FileExistsError:
                if output is not None:
                    raise BackupError(f"{output} exists already; choose another name") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    key_file = data_dir(settings) / "secrets" / "secret_key"
    included = key_file.is_file() and key_file.read_text().strip() == settings["SECRET_KEY"]
    return Result(written.path, written.size_bytes, written.sha256, written.manifest, included)


def verify(path: Path) -> dict[str, Any]:
    """Check an archive: every member against the manifest, and the database's integrity
    and migrations; returns the manifest. Raises ArchiveInvalid (or BackupError when the
    file cannot be read). An archive of a newer schema is intact: `check_schema` says
    whether this version can restore it."""
    with tempfile.TemporaryDirectory(prefix=".appliance-verify-") as scratch:
        copy = Path(scratch) / archive.DATABASE
        manifest = archive.unpack(path, lambda name: copy if name == archive.DATABASE
                                  else None)
        archive.check_database(copy, manifest)
    return manifest


# Runs: recorded, scheduled, pruned, told ------------------------------------------------


def _record(trigger: str, started: dt.datetime, result: Result | None, error: str) -> None:
    """A row for the run, when the database has the table (an `appliance backup` of a data
    directory not yet migrated has none) and can be written."""
    try:
        with database.atomic():
            if not SelfBackupRun.table_exists():
                return
            SelfBackupRun.create(
                trigger=trigger, status="ok" if result else "failed", started_at=started,
                finished_at=clock.now(), file=str(result.path) if result else "",
                size_bytes=result.size_bytes if result else 0,
                sha256=result.sha256 if result else "", error=error[:ERROR_MAX])
            stale = (SelfBackupRun.select(SelfBackupRun.id)
                     .order_by(SelfBackupRun.id.desc()).offset(RUNS_KEPT))
            SelfBackupRun.delete().where(SelfBackupRun.id.in_(stale)).execute()
    except Exception:  # the run's outcome stands; its record is a convenience
        log.exception("could not record the backup run")


def _day_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _scheduled() -> Any:
    return SelfBackupRun.select().where(SelfBackupRun.trigger == "scheduled")


def due(now: dt.datetime) -> bool:
    """Whether the daily backup should run now: scheduled, SQLite, no successful scheduled
    run yet this UTC day, and no failed one within RETRY_AFTER."""
    if _settings()["SELF_BACKUP_SCHEDULE"] == "off" or database_file() is None:
        return False
    if _scheduled().where(SelfBackupRun.status == "ok",
                          SelfBackupRun.started_at >= _day_start(now)).exists():
        return False
    return not _scheduled().where(SelfBackupRun.status == "failed",
                                  SelfBackupRun.started_at > now - RETRY_AFTER).exists()


def run_scheduled() -> str | None:
    """The `self_backup` task: make today's archive when `due`, prune, tell a failure.
    Returns "ok", "failed", or None when nothing was due. Never raises for a failed
    backup (it is recorded and told)."""
    now = clock.now()
    if not due(now):
        return None
    try:
        result = create_backup(trigger="scheduled")
    except BackupError as exc:
        log.error("the scheduled backup of the appliance failed: %s", exc.message)
        _tell_failure(now, exc.message)
        return "failed"
    pruned = prune(archive_dir(_settings()), _settings()["SELF_BACKUP_KEEP"])
    log.info("backup of the appliance written to %s (%d bytes)%s", result.path,
             result.size_bytes, f"; {len(pruned)} older deleted" if pruned else "")
    return "ok"


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` archives named like ours in `folder` (other files
    are never touched); returns the deleted ones."""
    if not folder.is_dir():
        return []
    ours = []
    for path in folder.iterdir():
        match = _ARCHIVE.match(path.name)
        if match and path.is_file():
            ours.append(((match["stamp"], int(match["n"] or 0)), path))
    ours.sort(reverse=True)
    deleted = [path for _, path in ours[keep:]]
    for path in deleted:
        path.unlink(missing_ok=True)
    return deleted


def _tell_failure(now: dt.datetime, error: str) -> None:
    """Tell every active administrator, unless a failure was told already since the last
    success or the start of the UTC day, whichever is later."""
    last_ok = (_scheduled().where(SelfBackupRun.status == "ok")
               .order_by(SelfBackupRun.started_at.desc()).first())
    since = max(_day_start(now), last_ok.started_at) if last_ok else _day_start(now)
    with database.atomic():
        if _scheduled().where(SelfBackupRun.notified == True,  # noqa: E712 (SQL)
                              SelfBackupRun.started_at >= since).exists():
            return
        latest = _scheduled().order_by(SelfBackupRun.id.desc()).first()
        if latest is not None:
            SelfBackupRun.update(notified=True).where(SelfBackupRun.id == latest.id).execute()
        outbox.emit_to_administrators("appliance.backup_failed", data={
            "error": error[:500], "attempted_at": clock.isoformat(now),
            "directory": str(archive_dir(_settings()))})


def still_failing(user_id: str, data: dict[str, Any]) -> bool:
    """For the failure mail: true while no scheduled backup succeeded since."""
    latest = _scheduled().order_by(SelfBackupRun.id.desc()).first()
    return latest is None or latest.status == "failed"


def status(principal: Principal) -> Status:
    """What the administrators' page shows: the settings, the last run, the last success
    and the archives in SELF_BACKUP_DIR."""
    require_admin(principal)
    settings = _settings()
    folder = archive_dir(settings)
    found = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _ARCHIVE.match(path.name)
            if match and path.is_file():
                made = dt.datetime.strptime(match["stamp"], "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=dt.UTC)
                found.append((path, path.stat().st_size, made))
    found.sort(key=lambda item: (item[2], item[0].name), reverse=True)
    return Status(schedule=settings["SELF_BACKUP_SCHEDULE"], keep=settings["SELF_BACKUP_KEEP"],
                  directory=folder, database_supported=database_file() is not None,
                  last_run=SelfBackupRun.select().order_by(SelfBackupRun.id.desc()).first(),
                  last_success=SelfBackupRun.select().where(SelfBackupRun.status == "ok")
                  .order_by(SelfBackupRun.id.desc()).first(),
                  archives=found)
