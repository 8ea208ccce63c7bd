"""Defects of the server and the database layer, each proved against the real thing.

- Connections: a real `appliance serve` in a subprocess, with hundreds of real sockets
  that are idle or send their headers a byte at a time, and the client address it sees
  behind a (trusted or untrusted) reverse proxy.
- The database: a real SQLite file whose write lock another connection holds (SQLITE_BUSY
  after the busy timeout), or whose files are made immutable with `chattr +i` (the tests
  run as root, and root ignores file modes: writes then fail with SQLITE_IOERR_WRITE on a
  connection opened before, SQLITE_READONLY on one opened after).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from appliance import create_app

PASSWORD = "correct horse battery 42"

# --- a served appliance ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """`appliance serve` in a subprocess on a free port (optionally behind `wrapper`, a
    command prefix such as a shell that lowers a limit first)."""

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None,
                 wrapper: list[str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = tmp_path / "data"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        full_env.update({"APPLIANCE_DATA_DIR": str(self.data_dir),
                         "APPLIANCE_LOG_LEVEL": "warning"})
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "appliance", "serve",
             "--port", str(self.port)],
            cwd=tmp_path, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited: {self.process.communicate()[0]}")
            try:
                requests.get(self.url + "/api/v1/health", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("the server did not answer within 30 s")

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> str:
        self.process.terminate()
        try:
            output, _ = self.process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output


@pytest.fixture
def serve(tmp_path):
    servers: list[Served] = []

    def start(env: dict[str, str] | None = None, wrapper: list[str] | None = None) -> Served:
        servers.append(Served(tmp_path, env, wrapper))
        return servers[-1]

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture
def enough_file_descriptors():
    """This process opens a few hundred sockets: raise its soft limit if it is low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class SlowHeaderSenders:
    """Clients that start a request and then send one more header line every `every`
    seconds, never finishing the headers (slow loris)."""

    def __init__(self, address: tuple[str, int], count: int, every: float = 0.5) -> None:
        self.sockets = []
        for _ in range(count):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: appliance\r\n")
            self.sockets.append(sock)
        self.closed_by_server: set[int] = set()
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        n = 0
        while not self._stop.wait(self._every):
            n += 1
            for index, sock in enumerate(self.sockets):
                if index in self.closed_by_server:
                    continue
                try:
                    sock.sendall(f"X-Slow-{n}: {'y' * 10}\r\n".encode())
                except OSError:
                    self.closed_by_server.add(index)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def _get_on(sock: socket.socket, path: str = "/api/v1/health", timeout: float = 5) -> bytes:
    """Send a whole request on an open socket and return the response's first bytes."""
    sock.settimeout(timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: appliance\r\nConnection: close\r\n\r\n"
                 .encode())
    return sock.recv(64)


def _closed_by_server_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (recv gives b"" or a reset), None if not."""
    start = time.monotonic()
    sock.settimeout(0.1)
    while time.monotonic() - start < seconds:
        try:
            if sock.recv(64) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


# --- 1. idle and slow clients ---------------------------------------------------------

IDLE_SOCKETS = 300
SLOW_SENDERS = 100


def test_idle_and_slow_header_clients_do_not_stall_the_server(serve, enough_file_descriptors):
    server = serve()
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(IDLE_SOCKETS)]
    slow = SlowHeaderSenders(server.address, SLOW_SENDERS)
    try:
        time.sleep(1.0)  # the dispatcher accepts what it will; the slow ones drip twice
        timings = []
        for _ in range(20):
            start = time.monotonic()
            response = requests.get(server.url + "/api/v1/health", timeout=1)
            timings.append(time.monotonic() - start)
            assert response.status_code == 200
        print(f"health with {IDLE_SOCKETS} idle and {SLOW_SENDERS} slow clients: "
              f"max {max(timings) * 1000:.1f} ms, median "
              f"{sorted(timings)[len(timings) // 2] * 1000:.1f} ms")
        assert max(timings) < 1.0
        # The idle sockets were accepted and are still served, the last opened too.
        for sock in (idle[0], idle[-1]):
            assert _get_on(sock).startswith(b"HTTP/1.1 200"), "an idle client was not served"
        assert slow.closed_by_server == set()  # within the header timeout: still open
    finally:
        slow.close()
        for sock in idle:
            sock.close()


def test_it_raises_a_low_open_file_limit_to_serve_its_connection_limit(
        serve, enough_file_descriptors):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip(f"the hard limit of open files ({hard}) is too low to show a raise")
    server = serve(wrapper=["sh", "-c", 'ulimit -Sn 256 && exec "$@"', "sh"])
    idle = [socket.create_connection(server.address, timeout=5) for _ in range(300)]
    try:
        time.sleep(0.5)
        assert requests.get(server.url + "/api/v1/health", timeout=1).status_code == 200
        assert _get_on(idle[-1]).startswith(b"HTTP/1.1 200")
    finally:
        for sock in idle:
            sock.close()


def test_it_warns_when_the_hard_open_file_limit_is_below_the_connection_limit(serve):
    server = serve(wrapper=["sh", "-c", 'ulimit -n 600 && exec "$@"', "sh"])
    assert requests.get(server.url + "/api/v1/health", timeout=1).status_code == 200
    output = server.stop()
    assert "the open-file limit (hard 600) fits 88 connections, not CONNECTION_LIMIT=1000" \
        in output


def test_a_client_that_sends_its_headers_too_slowly_is_disconnected(serve):
    server = serve({"APPLIANCE_HEADER_TIMEOUT_SECONDS": "1",
                    "APPLIANCE_CHANNEL_TIMEOUT_SECONDS": "60"})
    slow = SlowHeaderSenders(server.address, 3, every=0.2)  # active, never idle
    try:
        took = _closed_by_server_within(slow.sockets[0], 5)
        assert took is not None, "the slow sender was never disconnected"
        print(f"slow header sender closed after {took:.2f} s (HEADER_TIMEOUT_SECONDS=1)")
        assert took < 3.5
        assert requests.get(server.url + "/api/v1/health", timeout=1).status_code == 200
    finally:
        slow.close()


def test_an_idle_connection_is_closed_after_the_channel_timeout(serve):
    server = serve({"APPLIANCE_CHANNEL_TIMEOUT_SECONDS": "1"})
    with socket.create_connection(server.address, timeout=5) as idle:
        took = _closed_by_server_within(idle, 5)
    assert took is not None, "the idle connection was never closed"
    print(f"idle connection closed after {took:.2f} s (CHANNEL_TIMEOUT_SECONDS=1)")
    assert took < 3.5


def _admin_session_ip(server: Served, headers: dict[str, str]) -> str:
    tokens = requests.post(server.url + "/api/v1/auth/login", headers=headers, timeout=10,
                           json={"email": "root@example.test", "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
    sessions = requests.get(server.url + "/api/v1/auth/sessions", headers=auth, timeout=10)
    assert sessions.status_code == 200, sessions.text
    return next(s["ip"] for s in sessions.json()["data"] if s["current"])


def _create_admin(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    subprocess.run([sys.executable, "-m", "appliance", "create-admin", "--email",
                    "root@example.test", "--password", PASSWORD, "--data-dir",
                    str(tmp_path / "data")], cwd=tmp_path, env=env, check=True,
                   capture_output=True)


def test_the_client_address_comes_from_the_trusted_proxy_only(serve, tmp_path):
    _create_admin(tmp_path)
    forwarded = {"X-Forwarded-For": "198.51.100.7, 203.0.113.9",
                 "X-Forwarded-Proto": "https"}

    direct = serve()  # no proxy trusted: a forged header changes nothing
    assert _admin_session_ip(direct, forwarded) == "127.0.0.1"
    direct.stop()

    proxied = serve({"APPLIANCE_TRUSTED_PROXY": "127.0.0.1"})
    # One trusted hop: the address the proxy appended, never what the client wrote first.
    assert _admin_session_ip(proxied, forwarded) == "203.0.113.9"
    assert _admin_session_ip(proxied, {}) == "127.0.0.1"


# --- 2. a database that cannot be written ---------------------------------------------


@pytest.fixture
def db_app(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path / "data"), "SQLITE_BUSY_TIMEOUT_MS": 200})
    app.config["TESTING"] = True
    return app


def _db_path(app) -> Path:
    return Path(app.config["APPLIANCE"]["DATA_DIR"]) / "appliance.db"


@contextlib.contextmanager
def write_lock_held(path: Path) -> Iterator[None]:
    """Another connection holds the write lock (BEGIN EXCLUSIVE) until the block ends."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@contextlib.contextmanager
def immutable_files(path: Path) -> Iterator[None]:
    """The database and its WAL made immutable (`chattr +i`): not even root writes them."""
    files = [str(p) for p in (path, Path(f"{path}-wal")) if p.exists()]
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", *files],
                                        capture_output=True).returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("chattr +i does not work here (needs root and ext4 or similar)")
        pytest.skip("chattr +i does not work here (needs root and ext4 or similar)")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *files], check=True)


def _signup(client, email: str):
    return client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})


def _assert_database_unavailable(response) -> dict:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert int(response.headers["Retry-After"]) >= 1
    error = response.get_json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["request_id"] == response.headers["X-Request-Id"]
    return error


def test_a_locked_database_answers_503_database_unavailable(db_app):
    client = db_app.test_client()
    with write_lock_held(_db_path(db_app)):
        _assert_database_unavailable(_signup(client, "locked@example.test"))
        error = _assert_database_unavailable(client.get("/api/v1/health/db"))
        assert error["details"] == {"writable": False, "reason": "locked"}
        assert client.get("/api/v1/health").status_code == 200
    # The lock is gone: the same request works, on the same pooled connections.
    assert _signup(client, "locked@example.test").status_code == 201
    assert client.get("/api/v1/health/db").get_json()["writable"] is True


def test_an_unwritable_database_answers_503_database_unavailable(db_app):
    client = db_app.test_client()
    assert _signup(client, "first@example.test").status_code == 201  # a pooled connection
    with immutable_files(_db_path(db_app)):
        error = _assert_database_unavailable(_signup(client, "second@example.test"))
        assert error["details"]["reason"] in ("io_error", "read_only")
        error = _assert_database_unavailable(client.get("/api/v1/health/db"))
        assert error["details"] == {"writable": False, "reason": "read_only"}
        # Reading still works: the dashboard's pages and GETs are not broken by it.
        assert client.get("/api/v1/config").status_code == 200
    assert _signup(client, "second@example.test").status_code == 201


def test_database_health_reports_a_writable_database(db_app):
    body = db_app.test_client().get("/api/v1/health/db").get_json()
    assert body["ok"] is True
    assert body["writable"] is True


# --- the settings ---------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("CONNECTION_LIMIT", "0"), ("CONNECTION_LIMIT", "lots"), ("CHANNEL_TIMEOUT_SECONDS", "0"),
    ("HEADER_TIMEOUT_SECONDS", "-1"), ("TRUSTED_PROXY", "proxy.local"),
    ("TRUSTED_PROXY", "10.0.0.0/8"), ("TRUSTED_PROXY_HEADERS", "x-real-ip"),
    ("TRUSTED_PROXY_HEADERS", "forwarded,x-forwarded-for"), ("TRUSTED_PROXY_COUNT", "0"),
])
def test_it_refuses_a_malformed_connection_or_proxy_setting(name, value):
    from appliance.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=f"APPLIANCE_{name}"):
        load_settings(environ={f"APPLIANCE_{name}": value})


def test_proxy_settings_are_normalised():
    from appliance.config import load_settings

    settings = load_settings(environ={"APPLIANCE_TRUSTED_PROXY": " 0:0::1 ",
                                      "APPLIANCE_TRUSTED_PROXY_HEADERS":
                                          "X-Forwarded-Proto, x-forwarded-for"})
    assert settings["TRUSTED_PROXY"] == "::1"
    assert settings["TRUSTED_PROXY_HEADERS"] == "x-forwarded-for,x-forwarded-proto"
