"""The database: one proxy, one base model, connection per request, migrations.

`database` is a `DatabaseProxy` bound by `create_app` (or `connect`) to SQLite - WAL,
foreign keys, busy timeout, `BEGIN IMMEDIATE` for every `atomic()` block, connections
kept in a pool (opening one reads the whole schema, about a millisecond: more than most
requests spend on their queries; closing one returns it, rolling back anything left
open) - or to the database a `DATABASE_URL` names. Tables are made only by the numbered scripts in
`appliance/migrations`, applied in order and recorded in the `schema_migration` table.

`unavailable_reason` tells a database that cannot be used just now (locked past the busy
timeout, read-only, full, I/O errors: a 503) from a bug (a 500); `write_probe` is the
health check's proof that a write can be committed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import re
import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peewee import (
    DatabaseProxy,
    DateTimeField,
    Model,
    OperationalError,
    PostgresqlDatabase,
    SqliteDatabase,
    fn,
)
from playhouse.db_url import connect as connect_url
from playhouse.db_url import parse as parse_url
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

database = DatabaseProxy()

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

log = logging.getLogger(__name__)


class UTCDateTimeField(DateTimeField):
    """Aware UTC datetimes in Python, naive UTC in the database (sorts and compares as text)."""

    def db_value(self, value):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


_STORED_TIME = UTCDateTimeField()


def db_time(value: dt.datetime | None) -> Any:
    """A time as the UTC datetime columns store it (what peewee would bind), for raw SQL."""
    return _STORED_TIME.db_value(value)


def raw_sql(sql: str, params: Sequence[Any] = ()) -> Any:
    """Raw SQL written with `?` placeholders, run in the database's own style (SQLite's
    `?`, PostgreSQL's `%s`); the cursor."""
    if database.param != "?":
        sql = sql.replace("?", database.param)
    return database.execute_sql(sql, params)


def insert_statement(table: str, columns: Sequence[str], suffix: str = "") -> str:
    """`INSERT INTO table (columns) VALUES (?, ...) suffix` for executemany, with the
    database's own placeholders.

    Table and column names are the callers' constants, never input; values are bound.
    """
    names = ", ".join(f'"{column}"' for column in columns)
    marks = ", ".join([database.param] * len(columns))
    return f'INSERT INTO "{table}" ({names}) VALUES ({marks}) {suffix}'  # noqa: S608


class BaseModel(Model):
    class Meta:
        database = database
        legacy_table_names = False


POOL_MAX_CONNECTIONS = 64
POOL_STALE_SECONDS = 600


class CountingSqliteDatabase(PooledSqliteDatabase):
    """A pooled SQLite database that counts this process's writes: `writes` goes up after
    every statement that is not a SELECT and after every commit, so a cache can tell
    without a query that nothing was written through this process since it last looked
    (writers in other processes it cannot see: such a cache checks the database too, at
    least every so often)."""

    _made = itertools.count(1)
    busy_timeout_ms = 5000  # as given to sqlite_database (the write probe's bound)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Counts of two databases (one replacing another) never meet.
        self.writes = next(self._made) << 40
        self._writes_lock = threading.Lock()

    def _wrote(self) -> None:
        with self._writes_lock:
            self.writes += 1

    def execute_sql(self, sql: str, params: Any = None) -> Any:
        try:
            return super().execute_sql(sql, params)
        finally:
            if not sql.lstrip()[:6].upper() == "SELECT":
                self._wrote()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._wrote()


def writes_seen() -> int | None:
    """The write count of the bound database (CountingSqliteDatabase); None for others."""
    return getattr(database.obj, "writes", None)


def sqlite_database(path: Path | str, *, synchronous: str = "full",
                    busy_timeout_ms: int = 5000) -> SqliteDatabase:
    """A pooled SQLite database in WAL mode whose write transactions take the lock up
    front. A pooled connection serves one thread at a time, not always the same one."""
    db = CountingSqliteDatabase(
        str(path),
        max_connections=POOL_MAX_CONNECTIONS,
        stale_timeout=POOL_STALE_SECONDS,
        check_same_thread=False,
        pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "synchronous": synchronous,
            "busy_timeout": busy_timeout_ms,
        },
        timeout=busy_timeout_ms / 1000,
        # BEGIN IMMEDIATE: a writer waits for the lock at the start instead of failing
        # with SQLITE_BUSY half-way through when two transactions upgrade at once.
        lock_type="IMMEDIATE",
    )
    db.busy_timeout_ms = busy_timeout_ms
    return db


# SQLite's primary result codes that mean the database cannot be used just now (not a bug
# of the statement), with the reason a client is told.
UNAVAILABLE_CODES = {
    5: "locked",  # SQLITE_BUSY: another writer held the lock past the busy timeout
    6: "locked",  # SQLITE_LOCKED
    8: "read_only",  # SQLITE_READONLY: the file (or its directory) cannot be written
    10: "io_error",  # SQLITE_IOERR_*: the operating system refused a read or write
    13: "full",  # SQLITE_FULL: the disk is full
    14: "cannot_open",  # SQLITE_CANTOPEN
    15: "locked",  # SQLITE_PROTOCOL: the WAL lock protocol kept failing
}

# Seconds a client is told to wait (Retry-After): a lock passes; a disk needs an operator.
RETRY_AFTER_SECONDS = {"locked": 5}
RETRY_AFTER_DEFAULT_SECONDS = 30

# Longest the health check's write probe waits for the write lock (or the busy timeout,
# when shorter): a writer holding it longer than this is itself a problem worth reporting.
WRITE_PROBE_TIMEOUT_SECONDS = 1.0


def unavailable_reason(exc: BaseException | None) -> str | None:
    """Why `exc` means the database is unavailable ("locked", "read_only", "io_error",
    "full", "cannot_open", or "unavailable" for another engine's OperationalError), looking
    through what it was raised from or while handling; None for any other error (a bug).

    peewee re-raises a driver's error as its own class while handling it, and a failed
    write is often followed by a failed rollback: the whole chain is looked at."""
    chain: list[BaseException] = []
    while exc is not None and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for error in chain:
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(error, sqlite3.Error) and code is not None \
                and code & 0xFF in UNAVAILABLE_CODES:
            return UNAVAILABLE_CODES[code & 0xFF]
    if any(isinstance(error, OperationalError) for error in chain) \
            and not any(isinstance(error, sqlite3.Error) for error in chain):
        return "unavailable"  # another engine's: a lost connection, a server going down
    return None


def retry_after(reason: str) -> int:
    return RETRY_AFTER_SECONDS.get(reason, RETRY_AFTER_DEFAULT_SECONDS)


def write_probe(db: Any) -> str | None:
    """Whether `db` can be written now: None when it can, else the reason (as
    `unavailable_reason`); None too for an engine other than SQLite (not probed).

    On a connection of its own (never a pooled one, whose state a failure could spoil),
    it takes the write lock within `WRITE_PROBE_TIMEOUT_SECONDS`, writes the schema's
    user_version back unchanged and commits: a real write reaching the disk, that changes
    nothing. It never creates a missing file."""
    if not isinstance(db, SqliteDatabase):
        return None
    timeout = min(WRITE_PROBE_TIMEOUT_SECONDS, getattr(db, "busy_timeout_ms", 5000) / 1000)
    uri = "file:" + urllib.parse.quote(str(Path(db.database).resolve())) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return unavailable_reason(exc) or "error"
    return None


def open_database(settings: dict[str, Any], data_dir: Path):
    """Build (not connect) the database the settings name."""
    url = settings["DATABASE_URL"]
    if not url:
        return sqlite_database(
            data_dir / "appliance.db",
            synchronous=settings["SQLITE_SYNCHRONOUS"],
            busy_timeout_ms=settings["SQLITE_BUSY_TIMEOUT_MS"],
        )
    if url.startswith("sqlite:///"):
        return sqlite_database(
            url[len("sqlite:///"):],
            synchronous=settings["SQLITE_SYNCHRONOUS"],
            busy_timeout_ms=settings["SQLITE_BUSY_TIMEOUT_MS"],
        )
    if url.startswith(("postgresql://", "postgres://")):
        return postgres_database(url, max_connections=settings["THREADS"] * 2 + 8,
                                 statement_timeout_s=settings["DATABASE_STATEMENT_TIMEOUT_SECONDS"])
    return connect_url(url)


def postgres_database(url: str, *, max_connections: int = POOL_MAX_CONNECTIONS,
                      statement_timeout_s: int = 30) -> Any:
    """A pooled PostgreSQL database (psycopg2, the `postgres` extra) for `url`.

    The pool holds at most `max_connections` (twice the server's threads and some for
    the scheduler, the job and delivery workers); each connection has a statement timeout
    (a query running longer is cancelled: a 503, not a thread held for ever) and its
    time zone set to UTC (the columns hold naive UTC). A connection the server dropped (a
    restart, a failover) is discarded on its next use, so the appliance recovers by
    itself when the database is back."""

    params = parse_url(url)
    timeout_ms = int(statement_timeout_s * 1000)
    params["options"] = (f"{params.get('options', '')} -c statement_timeout={timeout_ms} "
                         "-c TimeZone=UTC").strip()
    params.setdefault("connect_timeout", 5)
    db = PooledPostgresqlDatabase(max_connections=max_connections,
                                  stale_timeout=POOL_STALE_SECONDS, timeout=10, **params)
    return db


def is_sqlite(db: Any = None) -> bool:
    """Whether `db` (the bound database when None) is SQLite."""
    return isinstance(database.obj if db is None else db, SqliteDatabase)


def kind(db: Any = None) -> str:
    """"sqlite" or "postgresql" (or the class name of another engine)."""
    db = database.obj if db is None else db
    if isinstance(db, SqliteDatabase):
        return "sqlite"

    return "postgresql" if isinstance(db, PostgresqlDatabase) else type(db).__name__


def epoch_seconds(expression: Any) -> Any:
    """SQL for the whole seconds since 1970 of a UTC datetime column, on either database."""

    if is_sqlite():
        return fn.strftime("%s", expression).cast("INTEGER")
    return fn.date_part("epoch", expression).cast("BIGINT")


def sqlite_path(db: Any) -> Path | None:
    """The file of a SQLite database (absolute); None for another engine."""
    if not isinstance(db, SqliteDatabase) or db.database in ("", ":memory:"):
        return None
    return Path(db.database).expanduser().resolve()


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy the SQLite database at `source` to the new file `target`, consistently, while
    other connections read and write it (SQLite's online backup API, in one step: one
    read transaction, so the copy holds exactly the transactions committed before it
    began). The copy is in rollback-journal mode, a single self-contained file, 0600.

    Raises sqlite3.Error when the source cannot be read; `target` is then removed.
    """
    uri = "file:" + urllib.parse.quote(str(source)) + "?mode=rw"  # never create a missing one
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(uri, uri=True, timeout=30)
        try:
            dst = sqlite3.connect(str(target))
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
        finally:
            src.close()
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def migration_runner(db) -> Runner:
    return Runner(db, str(MIGRATIONS_DIR), table_name="schema_migration")


class MigrationFailed(Exception):
    """A migration raised: it was rolled back, and the start-up must stop. The message
    names the migration, the error, the schema the database is now at, and the copy
    taken before the upgrade (when one was)."""

    def __init__(self, message: str, backup: Path | None) -> None:
        super().__init__(message)
        self.backup = backup


def private_dir(path: Path) -> Path:
    """Make `path` and any missing parents with mode 0700 (backups hold the secrets)."""
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return path


PRE_MIGRATE_KEEP = 3
_PRE_MIGRATE = re.compile(r"^pre-migrate-(\d+)-(\d+)-(\d{8}T\d{6}Z)(?:-(\d+))?\.sqlite3$")


def _index(name: str) -> str:
    digits = re.match(r"\d+", name)
    return digits.group() if digits else name


def pre_migrate_backup(db: Any, backup_dir: Path, applied: str, target: str) -> Path:
    """Copy the database to `backup_dir/pre-migrate-<from>-<to>-<UTC time>.sqlite3` (0600;
    the directory is made 0700) and keep the newest PRE_MIGRATE_KEEP such copies."""
    source = sqlite_path(db)
    assert source is not None
    private_dir(backup_dir)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"pre-migrate-{_index(applied)}-{_index(target)}-{stamp}"
    # Within one second, each copy takes a number past the highest so far (a name freed
    # by pruning is never reused: it would sort as the oldest).
    taken = [int(m.group(4) or 0) for m in map(_PRE_MIGRATE.match, os.listdir(backup_dir))
             if m and m.group(3) == stamp]
    for attempt in itertools.count(max(taken) + 1 if taken else 0):
        path = backup_dir / (f"{stem}.sqlite3" if attempt == 0 else f"{stem}-{attempt}.sqlite3")
        try:
            copy_sqlite(source, path)
            break
        except FileExistsError:
            continue
    kept = sorted((p for p in backup_dir.iterdir() if _PRE_MIGRATE.match(p.name)),
                  key=_pre_migrate_order, reverse=True)
    for old in kept[PRE_MIGRATE_KEEP:]:
        old.unlink(missing_ok=True)
    return path


def _pre_migrate_order(path: Path) -> tuple[str, int]:
    match = _PRE_MIGRATE.match(path.name)
    assert match is not None
    return match.group(3), int(match.group(4) or 0)


def migrate(db, backup_dir: Path | None = None) -> list[str]:
    """Apply pending migrations in order; return the names applied (none when current).

    Each migration runs in its own transaction (peewee's runner; SQLite's DDL is
    transactional), so one that fails leaves the database as the migration before it
    left it. With `backup_dir`, a SQLite database that already has migrations applied
    and some pending is first copied there (`pre_migrate_backup`). A failure raises
    MigrationFailed, whose message names that copy.
    """
    with db.connection_context():
        runner = migration_runner(db)
        status = runner.status()
        done = [m.name for m in status if m.applied]
        pending = [m.name for m in status if not m.applied and m.path is not None]
        backup = None
        if done and pending and backup_dir is not None and sqlite_path(db) is not None:
            backup = pre_migrate_backup(db, backup_dir, done[-1], pending[-1])
            log.info("database copied to %s before applying %s", backup,
                        ", ".join(pending))
        try:
            applied = runner.up()
        except Exception as exc:
            now_at = [m.name for m in runner.status() if m.applied]
            failed = next((name for name in pending if name not in now_at), "?")
            where = f"the database is at {now_at[-1]}" if now_at else "the database is empty"
            saved = (f"; a copy from before this upgrade is at {backup}" if backup
                     else "")
            raise MigrationFailed(
                f"migration {failed} failed ({type(exc).__name__}: {exc}) and was rolled "
                f"back: {where}{saved}. The appliance does not start until this is "
                "fixed; see 'Restore after a failed upgrade' in docs/operations.md.",
                backup) from exc
    for name in applied:
        log.info("applied migration %s", name)
    return applied


def migration_status(db) -> list[tuple[str, bool]]:
    with db.connection_context():
        return [(m.name, m.applied is not None) for m in migration_runner(db).status()]


def release(db) -> None:
    """Close every pooled connection of `db` (a database being replaced or shut down)."""
    if isinstance(db, PooledDatabase):
        db.close_all()


def close_connection(exc: BaseException | None = None) -> None:
    """Teardown hook: the connection opened lazily for this request is closed."""
    if database.obj is not None and not database.is_closed():
        database.close()
