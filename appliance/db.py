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
import sqlite3
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peewee import DatabaseProxy, DateTimeField, Model, OperationalError, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase, PooledSqliteDatabase

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
    # PostgreSQL and others through peewee's db_url; autoconnect as with SQLite.
    return connect_url(url)


def migration_runner(db) -> Runner:
    return Runner(db, str(MIGRATIONS_DIR), table_name="schema_migration")


def migrate(db) -> list[str]:
    """Apply pending migrations in order; return the names applied (none when current)."""
    with db.connection_context():
        applied = migration_runner(db).up()
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
