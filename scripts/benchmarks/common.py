"""What every part of scripts/bench shares: the error type, the table row, the settings of
a run, the servers it starts (the appliance and the bare Flask baseline), the account it
signs in with, and its HTTP clients.

Servers are processes on 127.0.0.1 in a session of their own (a Ctrl-C reaches only the
harness, which then stops them), with APPLIANCE_* variables removed from their
environment (`server_env`). Whatever keeps a measurement from running raises BenchError;
the harness prints it and exits with status 2.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS_DIR = Path(__file__).resolve().parent.parent  # put on the children's sys.path
REPO_ROOT = SCRIPTS_DIR.parent
HEALTH_PATH = "/api/v1/health"
LOGIN_PATH = "/api/v1/auth/login"
ME_PATH = "/api/v1/auth/me"
PROJECT_PATH = "/api/v1/projects/{project_id}"
INSTANCES_PATH = "/api/v1/projects/{project_id}/instances"
BENCH_EMAIL = "bench@example.com"
HOST = "127.0.0.1"
THREADS = 8
CONNECTIONS = 8
POLL_INTERVAL_S = 0.01
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
# The loaded server's settings: request limits far above what wrk sends in a minute.
LOADED_SETTINGS = {"APPLIANCE_RATE_LIMIT_USER_PER_MINUTE": "10000000",
                   "APPLIANCE_RATE_LIMIT_AUTH_PER_MINUTE": "10000000"}
SQLITE_MAX_VARIABLES = 999  # bound parameters per statement on the oldest SQLite 3
BENCH_KEY_RPM = 100_000  # the measured key's own limit (the largest allowed)
TEST_IMAGE = os.environ.get("APPLIANCE_TEST_IMAGE") or "appliance-test/busybox"
PLAN = {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}  # the created instances' plan

BASELINE_APP = f'''\
"""Baseline for scripts/bench: Flask with one route, on waitress like the appliance."""
import sys

from flask import Flask
from waitress import serve

app = Flask(__name__)


@app.get("{HEALTH_PATH}")
def health():
    return {{"ok": True}}


serve(app, host="{HOST}", port=int(sys.argv[1]), threads={THREADS}, ident="baseline")
'''


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed)."""


@dataclass
class Row:
    """One line of the printed table; `ok` is None when the metric has no target."""

    metric: str
    value: str
    target: str
    ok: bool | None


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """The harness's environment without APPLIANCE_* settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("APPLIANCE_")}


class Server:
    """A server process with its log file; `stop` terminates it, then kills it."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path,
                 data_dir: Path | None = None, *, settings: dict[str, str] | None = None,
                 ) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self.data_dir = data_dir
        self._log = log_path.open("wb")
        self.spawned_at = time.perf_counter()
        try:
            # Own session: a Ctrl-C reaches only the harness, which then stops the server.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=server_env() | (settings or {}), cwd=log_path.parent,
                start_new_session=True)
        except OSError:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def health_status(port: int) -> int | None:
    """The status of one GET /api/v1/health, or None when nothing answers yet."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", HEALTH_PATH)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_healthy(server: Server) -> float:
    """Poll until the first 200; return the seconds since the process was spawned."""
    while True:
        if health_status(server.port) == 200:
            return time.perf_counter() - server.spawned_at
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited with status {server.process.returncode}:\n"
                             f"{server.log_tail()}")
        if time.perf_counter() - server.spawned_at > START_TIMEOUT_S:
            raise BenchError(f"{server.name} did not answer {HEALTH_PATH} with 200 within "
                             f"{START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
        time.sleep(POLL_INTERVAL_S)


def appliance_bin() -> str:
    """`appliance` next to the running interpreter (the test venv's), else on PATH."""
    candidate = Path(sys.executable).parent / "appliance"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("appliance")
    if not found:
        raise BenchError("the `appliance` command is missing; run this through scripts/bench")
    return found


def start_appliance(work: Path, name: str, settings: dict[str, str] | None = None,
                    ) -> Server:
    """Spawn `appliance serve` on a fresh data directory under `work` (with `settings`,
    APPLIANCE_* variables, in its environment)."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    port = free_port()
    data_dir = run_dir / "data"
    argv = [appliance_bin(), "serve", "--host", HOST, "--port", str(port),
            "--threads", str(THREADS), "--data-dir", str(data_dir)]
    return Server(name, argv, port, run_dir / "server.log", data_dir, settings=settings)


def start_baseline(work: Path) -> Server:
    """Spawn the bare Flask + waitress baseline, its module written into `work`."""
    module = work / "baseline_app.py"
    module.write_text(BASELINE_APP)
    port = free_port()
    return Server("baseline", [sys.executable, str(module), str(port)], port,
                  work / "baseline.log")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (MiB), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


# --- an account to sign in with ------------------------------------------------------


def create_account(server: Server, password: str) -> None:
    """`appliance create-admin` with BENCH_EMAIL in the data directory `server` serves."""
    argv = [appliance_bin(), "create-admin", "--email", BENCH_EMAIL,
            "--data-dir", str(server.data_dir)]
    env = server_env() | {"APPLIANCE_ADMIN_PASSWORD": password}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                              cwd=server.log_path.parent, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        raise BenchError("appliance create-admin did not finish within 60 s") from None
    if done.returncode != 0:
        raise BenchError(f"appliance create-admin failed with status {done.returncode}:\n"
                         f"{done.stdout}{done.stderr}")


def call_json(port: int, method: str, path: str, body: dict[str, Any] | None = None,
              token: str | None = None, *, api_key: str | None = None) -> tuple[int, Any]:
    """One request to the server; its status and its JSON body (None if not JSON)."""
    headers = {"Accept": "application/json"}
    if api_key is not None:
        headers["X-API-Key"] = api_key
    if body is not None:
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        raw = response.read()
    except OSError as exc:
        raise BenchError(f"{method} {path} failed: {exc}") from None
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, None


def sign_in(server: Server, password: str) -> str:
    """Sign in once over HTTP and check the token on /auth/me; return the access token."""
    status, body = call_json(server.port, "POST", LOGIN_PATH,
                             {"email": BENCH_EMAIL, "password": password})
    token = body.get("access_token") if isinstance(body, dict) else None
    if status != 200 or not isinstance(token, str) or not token:
        raise BenchError(f"POST {LOGIN_PATH} answered {status} without an access token: "
                         f"{body}\n{server.log_tail()}")
    status, body = call_json(server.port, "GET", ME_PATH, token=token)
    if status != 200 or not isinstance(body, dict) or body.get("email") != BENCH_EMAIL:
        raise BenchError(f"GET {ME_PATH} with the new token answered {status}: {body}")
    return token


# --- the API with a key, and bulk inserts for the seeds ----------------------------------


class ApiClient:
    """Requests to the appliance with an API key over one kept-alive connection."""

    def __init__(self, port: int, api_key: str) -> None:
        self.headers = {"Accept": "application/json", "X-API-Key": api_key}
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             ) -> tuple[int, Any]:
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (1, 2):  # a GET goes again once if the kept connection was closed
            try:
                self.conn.request(method, path, json.dumps(body) if body is not None else None,
                                  headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                self.conn.close()
                if method != "GET" or attempt == 2:
                    raise BenchError(f"{method} {path} failed: {exc}") from None
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def close(self) -> None:
        self.conn.close()


def insert_all(model: Any, rows: list[dict[str, Any]]) -> None:
    """`insert_many` in batches that stay within SQLite's bound-parameter limit."""
    from peewee import chunked

    if rows:
        size = max(1, SQLITE_MAX_VARIABLES // len(rows[0]))
        for batch in chunked(rows, size):
            model.insert_many(batch).execute()
