"""The test suite on PostgreSQL: `APPLIANCE_TEST_DATABASE_URL=postgresql://.../postgres`
(a server and a database the tests may create databases from) runs every test on a
database of its own instead of a SQLite file.

Migrations run once, into a template database; each test (and each module-scoped
served appliance) gets a copy of it (`CREATE DATABASE ... TEMPLATE`), made ahead by a
background thread so that a test rarely waits for one, and dropped in the background
after it. Tests that are about the SQLite file itself carry the `sqlite_only` marker.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
import uuid
from urllib.parse import urlparse, urlunparse

URL = os.environ.get("APPLIANCE_TEST_DATABASE_URL", "")
ENABLED = URL.startswith(("postgresql://", "postgres://"))
AHEAD = 2  # copies kept ready

_ready: queue.Queue[str] = queue.Queue(maxsize=AHEAD)
_doomed: queue.Queue[str | None] = queue.Queue()
_state = {"template": ""}  # the template database, once made
_lock = threading.Lock()
_prefix = f"appliance_t{os.getpid()}_"


def _url(name: str) -> str:
    return urlunparse(urlparse(URL)._replace(path="/" + name))


def _admin():
    import psycopg2

    conn = psycopg2.connect(URL)
    conn.autocommit = True
    return conn


def _make_template() -> str:
    from appliance import db

    name = _prefix + "template"
    conn = _admin()
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    database = db.postgres_database(_url(name), max_connections=2)
    try:
        db.migrate(database)
    finally:
        db.release(database)
    return name


def _maker() -> None:
    conn = _admin()
    template = _state["template"]
    while True:
        name = f"{_prefix}{uuid.uuid4().hex[:12]}"
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        _ready.put(name)


def _dropper() -> None:
    conn = _admin()
    while True:
        name = _doomed.get()
        if name is None:
            return
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start() -> None:
    """Make the template and start the threads (once per test session)."""
    with _lock:
        if _state["template"]:
            return
        _state["template"] = _make_template()
        threading.Thread(target=_maker, daemon=True, name="pg-maker").start()
        threading.Thread(target=_dropper, daemon=True, name="pg-dropper").start()
        atexit.register(_drop_all)


def new_database() -> str:
    """The URL of a fresh, migrated, empty database."""
    start()
    return _url(_ready.get(timeout=120))


def drop(url: str) -> None:
    """Drop the database of `url` (in the background)."""
    _doomed.put(urlparse(url).path.lstrip("/"))


def _drop_all() -> None:
    try:
        conn = _admin()
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                        (_prefix + "%",))
            for (name,) in cur.fetchall():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:  # best effort at exit
        print(f"could not drop the test databases: {exc}")
