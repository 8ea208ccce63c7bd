"""Benchmark the appliance: health, login and /auth/me throughput, start-up, idle memory.

What it measures, each on 127.0.0.1 with processes started here and stopped at the end:

* health requests/s: `wrk` (1 thread, 8 connections, `--duration` seconds after one
  `--warmup` per server) loads GET /api/v1/health of the appliance (`appliance serve
  --threads 8`) and of a baseline, a bare Flask app with only that route on waitress with
  the same settings. The two are loaded alternately for `--rounds` rounds and the median
  of each is reported, so noise on a small machine matters less. The ratio appliance /
  baseline is what the appliance's own request path (hooks, metrics, error handling)
  costs on top of Flask and waitress; 1.0 means nothing, the target is >= 0.8.
* p50 / p99 latency of the appliance under that load (median over the rounds), from
  wrk's `--latency` distribution.
* start-up time: from spawning `appliance serve` on a fresh data directory (so every
  migration runs and the secrets are generated) to the first 200 from GET
  /api/v1/health, polled every 10 ms; median over `--startup-runs` extra starts and the
  start of the server then loaded. Target < 1.5 s.
* idle RSS: VmRSS of the appliance process after start-up and `--idle` seconds of
  rest, before any load. Target < 80 MB.
* login requests/s: after the idle RSS is read, `appliance create-admin` adds an account
  to the loaded server's data directory (the server runs meanwhile, so its start-up above
  stays a fresh one). wrk then POSTs that account's email and password as JSON to
  /api/v1/auth/login (a Lua script sets method, body and Content-Type), same threads and
  connections, for `--auth-rounds` rounds of `--auth-duration` seconds (default
  `--duration`, at most 5, so a default run stays under 2 minutes) after a `--warmup`.
  Each sign-in verifies an argon2id hash (19 MiB, about 40 ms of CPU) and starts a
  session, so tens per second on two cores is expected; what matters is the trend.
* /auth/me requests/s: GET /api/v1/auth/me with `Authorization: Bearer <access token>`,
  the token from one sign-in over HTTP before any load (it lives 15 minutes), loaded
  like login and alternating with it.
  Both are reported as req/s, as a ratio to the baseline's health req/s of the same run
  (no target) and with p50 / p99. Every login and /auth/me response must be 2xx with no
  socket error (a 429 would mean a rate limit or the sign-in throttle kicked in): the row
  "login and /auth/me errors" has target 0 and, when missed, counts as a missed target.
* GET project with an API key: the database is first filled to SEED_USERS (1,000) users
  and SEED_KEYS (10,000) API keys, in a child interpreter with the appliance's own models
  while the server runs (like create-admin). SEED_SERVICE_USERS users are made by
  `accounts.create_user` (argon2, default project, owner membership); the others are
  bulk-inserted in one transaction with one precomputed password hash, each with its
  default project and owner membership, and the keys spread over all users (distinct
  SHA-256 secret hashes, half of them restricted to the owner's default project, a tenth
  revoked). The measured key is made by `api_keys.create_key` for a service-made user,
  with `rate_limit_rpm` BENCH_KEY_RPM so its own limit never answers 429 (a key is
  counted only against its own limit, not the user's). wrk then loads GET
  /api/v1/projects/<that user's default project> with `X-API-Key: <secret>`, in the
  same alternating rounds as login and /auth/me. Reported as req/s, p50 / p99 and a
  ratio to the baseline's health req/s, target >= TARGET_KEY_PROJECT_RATIO (0.7).
  Every response must be 2xx: any non-2xx or socket error is printed as an error, the
  row "GET project (API key) errors" (target 0) is missed and so is the ratio's target,
  since error answers would make the number meaningless.

The table has one row per metric with its target and whether it is met ("-" when the
row has no target); every number, each wrk run included, is also written as JSON to
`--output`. The exit status is 0 even when a target is missed, unless `--strict`.
Throughput on a small machine is only comparable between quiet runs: the harness notes
the load average before it starts (`loadavg_1min_before` in the JSON).
APPLIANCE_* variables are removed from the servers' environment, so the appliance runs
with its defaults, except that the loaded server's per-user and per-address request
limits are raised (LOADED_SETTINGS): at their defaults (1,200 and 60 per minute) most of
the /auth/me and login load would be answered 429. The limits are still counted on every
request, so their cost stays in the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH_PATH = "/api/v1/health"
LOGIN_PATH = "/api/v1/auth/login"
ME_PATH = "/api/v1/auth/me"
BENCH_EMAIL = "bench@example.com"
AUTH_DURATION_MAX = 5  # default seconds per authenticated run: keeps a run < 2.5 min
AUTH_WRK_TIMEOUT = "10s"  # wrk's default 2 s is close to a sign-in's latency on a busy box
HOST = "127.0.0.1"
THREADS = 8
CONNECTIONS = 8
POLL_INTERVAL_S = 0.01
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
BUSY_LOADAVG = 1.0  # 1-minute load average above which the numbers are flagged as noisy
# The loaded server's settings: request limits far above what wrk sends in a minute.
LOADED_SETTINGS = {"APPLIANCE_RATE_LIMIT_USER_PER_MINUTE": "10000000",
                   "APPLIANCE_RATE_LIMIT_AUTH_PER_MINUTE": "10000000"}

PROJECT_PATH = "/api/v1/projects/{project_id}"
SEED_USERS = 1_000  # users in the database while GET project is loaded with an API key
SEED_KEYS = 10_000  # API keys in the database then
SEED_SERVICE_USERS = 5  # of the users, made by accounts.create_user (argon2, ~45 ms each)
SEED_TIMEOUT_S = 120
SQLITE_MAX_VARIABLES = 999  # bound parameters per statement on the oldest SQLite 3
BENCH_KEY_RPM = 100_000  # the measured key's own limit (the largest allowed)
BENCH_KEY_SCOPES = ("instances:read", "projects:write")

TARGET_RATIO = 0.8
TARGET_STARTUP_S = 1.5
TARGET_RSS_MB = 80.0
TARGET_KEY_PROJECT_RATIO = 0.7

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

# wrk script for the login load; {body} is a Lua string literal (JSON-quoted ASCII).
LOGIN_LUA = """\
-- scripts/bench: POST a JSON sign-in on every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed)."""


@dataclass(frozen=True)
class Endpoint:
    """What wrk loads: a name (the prefix of its metrics), a path and extra wrk options."""

    name: str
    path: str
    wrk_options: tuple[str, ...] = ()
    label: str = ""  # printed per round; default: the path without /api/v1


HEALTH = Endpoint("health", HEALTH_PATH)


@dataclass
class WrkResult:
    server: str
    endpoint: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass
class Row:
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


# --- wrk ---------------------------------------------------------------------------


def to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit] * 1000


def parse_wrk(output: str, server: str, endpoint: str, round_no: int) -> WrkResult:
    """Requests/s, p50, p99 and error counts from wrk's `--latency` report."""
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    latencies = {match[1]: to_ms(match[2], match[3]) for match in _LATENCY_RE.finditer(output)}
    if not rps or not requests or set(latencies) != {"50", "99"}:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    non_2xx = _NON_2XX_RE.search(output)
    errors = _SOCKET_ERRORS_RE.search(output)
    return WrkResult(
        server=server, endpoint=endpoint, round=round_no, requests_per_s=float(rps[1]),
        p50_ms=latencies["50"], p99_ms=latencies["99"], requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0)


def wrk_bin() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is missing; run this through scripts/bench, which installs it")
    return found


def run_wrk(port: int, duration_s: int, endpoint: Endpoint = HEALTH) -> str:
    """Load `endpoint` (GET /api/v1/health) for `duration_s` seconds; return wrk's report."""
    argv = [wrk_bin(), "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency",
            *endpoint.wrk_options, f"http://{HOST}:{port}{endpoint.path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    return done.stdout


def load(server: Server, duration_s: int, round_no: int, endpoint: Endpoint = HEALTH,
         ) -> WrkResult:
    output = run_wrk(server.port, duration_s, endpoint)
    result = parse_wrk(output, server.name, endpoint.name, round_no)
    label = (server.name if endpoint is HEALTH
             else endpoint.label or endpoint.path.removeprefix("/api/v1"))
    print(f"  round {round_no} {label:13} {result.requests_per_s:9.1f} req/s  "
          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    if result.non_2xx or result.socket_errors:
        print(f"    warning: {result.non_2xx} non-2xx responses, "
              f"{result.socket_errors} socket errors", flush=True)
    return result


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


def auth_endpoints(work: Path, password: str, token: str) -> tuple[Endpoint, Endpoint]:
    """The login load (a Lua script written into `work`) and the /auth/me load."""
    script = work / "login.lua"
    body = json.dumps({"email": BENCH_EMAIL, "password": password})
    script.write_text(LOGIN_LUA.format(body=json.dumps(body)))
    return (Endpoint("login", LOGIN_PATH,
                     ("-s", str(script), "--timeout", AUTH_WRK_TIMEOUT)),
            Endpoint("me", ME_PATH, ("-H", f"Authorization: Bearer {token}")))


# --- a database of realistic size and an API key ---------------------------------------


@dataclass(frozen=True)
class Seeded:
    """What `seed_database` made: the measured key's secret and project, and the totals."""

    secret: str
    project_id: str
    users: int
    api_keys: int
    projects: int
    seconds: float


# Run by `seed_database` as `python -c SEED_CODE <scripts dir> <data dir> <result file>`.
SEED_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); import bench; "
             "bench.seed_in_this_process(sys.argv[2], sys.argv[3])")


def seed_in_this_process(data_dir: str, result_path: str) -> None:
    """Fill the database in `data_dir` to SEED_USERS users and SEED_KEYS API keys.

    Runs in a child interpreter (see `seed_database`): it imports the appliance and
    activates its settings. Writes the measured key's secret and project, and the totals,
    as JSON to `result_path`.
    """
    from appliance import create_app
    from appliance.db import database
    from appliance.models import ApiKey, Membership, Project, User
    from appliance.services import accounts, api_keys, clock, passwords
    from appliance.services.ids import hash_token, new_id
    from appliance.services.sessions import Principal

    began = time.perf_counter()
    app = create_app({"DATA_DIR": data_dir})
    with app.app_context():
        # The real path first: users with their default project, and the measured key.
        password = secrets.token_urlsafe(18)
        made = [accounts.create_user(f"bench-user{index}@example.com", password,
                                     verified=True)
                for index in range(SEED_SERVICE_USERS)]
        owner = Principal(made[0], None, "session")
        new = api_keys.create_key(owner, "bench load", list(BENCH_KEY_SCOPES),
                                  rate_limit_rpm=BENCH_KEY_RPM)
        project_id = Project.get(Project.created_by == made[0].id, Project.is_default).id

        # The rest in bulk, one transaction: users, their default projects, memberships.
        now = clock.now()
        fixed_hash = passwords.hash_password(secrets.token_urlsafe(18))
        users, projects, members = [], [], []
        for index in range(SEED_USERS - User.select().count()):
            created = now - dt.timedelta(minutes=index)
            user_id, prj_id = new_id("usr"), new_id("prj")
            users.append({"id": user_id, "email": f"user{index:05d}@bench.example.com",
                          "display_name": f"User {index}", "password_hash": fixed_hash,
                          "role": "user", "status": "active", "email_verified_at": created,
                          "password_changed_at": created, "created_at": created,
                          "updated_at": created})
            projects.append({"id": prj_id, "name": "Default project", "is_default": True,
                             "created_by": user_id, "created_at": created,
                             "updated_at": created})
            members.append({"project": prj_id, "user": user_id, "role": "owner",
                            "created_at": created, "updated_at": created})
        with database.atomic():
            for model, rows in ((User, users), (Project, projects), (Membership, members)):
                insert_all(model, rows)
            defaults = {row.created_by_id: row.id for row in
                        Project.select(Project.id, Project.created_by).where(Project.is_default)}
            owners = sorted(defaults)
            keys = []
            for index in range(SEED_KEYS - ApiKey.select().count()):
                user_id = owners[index % len(owners)]
                prefix = api_keys.SECRET_PREFIX + secrets.token_hex(4)
                secret = f"{prefix}_{secrets.token_urlsafe(24)}"
                keys.append({
                    "id": new_id("key"), "user": user_id, "name": f"key {index}",
                    "prefix": prefix, "last_four": secret[-4:],
                    "secret_hash": hash_token(secret), "scopes": " ".join(BENCH_KEY_SCOPES),
                    "project": defaults[user_id] if index % 2 else None,
                    "usage_count": 0, "created_at": now - dt.timedelta(seconds=index),
                    "revoked_at": now if index % 10 == 9 else None})
            insert_all(ApiKey, keys)
        totals = {"users": User.select().count(), "api_keys": ApiKey.select().count(),
                  "projects": Project.select().count()}
    Path(result_path).write_text(json.dumps(
        {"secret": new.secret, "project_id": project_id, **totals,
         "seconds": round(time.perf_counter() - began, 3)}))


def insert_all(model: Any, rows: list[dict[str, Any]]) -> None:
    """`insert_many` in batches that stay within SQLite's bound-parameter limit."""
    from peewee import chunked

    if rows:
        size = max(1, SQLITE_MAX_VARIABLES // len(rows[0]))
        for batch in chunked(rows, size):
            model.insert_many(batch).execute()


def seed_database(server: Server, work: Path) -> Seeded:
    """Fill the data directory `server` serves (see `seed_in_this_process`) and check the
    measured key over HTTP: GET its project must answer 200 with that project."""
    result_path = work / "seeded.json"
    argv = [sys.executable, "-c", SEED_CODE, str(Path(__file__).resolve().parent),
            str(server.data_dir), str(result_path)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=server_env(),
                              timeout=SEED_TIMEOUT_S, cwd=server.log_path.parent,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"seeding the database took more than {SEED_TIMEOUT_S} s") from None
    if done.returncode != 0 or not result_path.exists():
        raise BenchError(f"seeding the database failed with status {done.returncode}:\n"
                         f"{done.stdout}{done.stderr}")
    seeded = Seeded(**json.loads(result_path.read_text()))
    if seeded.users != SEED_USERS or seeded.api_keys != SEED_KEYS:
        raise BenchError(f"seeding made {seeded.users} users and {seeded.api_keys} API keys, "
                         f"not {SEED_USERS} and {SEED_KEYS}")
    path = PROJECT_PATH.format(project_id=seeded.project_id)
    status, body = call_json(server.port, "GET", path, api_key=seeded.secret)
    if status != 200 or not isinstance(body, dict) or body.get("id") != seeded.project_id:
        raise BenchError(f"GET {path} with the bench API key answered {status}: {body}\n"
                         f"{server.log_tail()}")
    return seeded


def key_project_endpoint(seeded: Seeded) -> Endpoint:
    """GET the key owner's default project with `X-API-Key`."""
    return Endpoint("key_project", PROJECT_PATH.format(project_id=seeded.project_id),
                    ("-H", f"X-API-Key: {seeded.secret}"), label="/projects/{p}")


# --- the measurements ------------------------------------------------------------------


def measure_startup(work: Path, runs: int) -> list[float]:
    """Seconds to the first healthy answer, one fresh data directory per start."""
    samples = []
    for index in range(runs):
        with running(start_appliance(work, f"startup{index}")) as server:
            samples.append(wait_healthy(server))
        print(f"  start-up {index + 1}: {samples[-1]:.3f} s", flush=True)
    return samples


def measure_load(appliance: Server, baseline: Server, args: argparse.Namespace,
                 ) -> list[WrkResult]:
    """Warm each server up once, then load them alternately for `args.rounds` rounds."""
    if args.warmup > 0:
        for server in (baseline, appliance):
            run_wrk(server.port, args.warmup)
    results = []
    for round_no in range(1, args.rounds + 1):
        for server in (baseline, appliance):
            results.append(load(server, args.duration, round_no))
    return results


def measure_auth(appliance: Server, endpoints: tuple[Endpoint, ...],
                 args: argparse.Namespace) -> list[WrkResult]:
    """Warm each endpoint up once, then load them alternately for `args.auth_rounds`.

    A GET project run with any non-2xx answer or socket error is reported as an error.
    """
    if args.warmup > 0:
        for endpoint in endpoints:
            run_wrk(appliance.port, args.warmup, endpoint)
    results = []
    for round_no in range(1, args.auth_rounds + 1):
        for endpoint in endpoints:
            result = load(appliance, args.auth_duration, round_no, endpoint)
            if endpoint.name == "key_project" and (result.non_2xx or result.socket_errors):
                print(f"bench: ERROR: GET {endpoint.label} with the API key had "
                      f"{result.non_2xx} non-2xx answers and {result.socket_errors} socket "
                      "errors; its req/s is not valid", file=sys.stderr, flush=True)
            results.append(result)
    return results


def median_of(results: list[WrkResult], server: str, field: str,
              endpoint: str = HEALTH.name) -> float:
    return statistics.median(getattr(r, field) for r in results
                             if r.server == server and r.endpoint == endpoint)


def summarize(results: list[WrkResult], startup: list[float], idle_rss: float,
              seeded: Seeded) -> dict[str, float]:
    metrics = {
        f"{server}_{field}": median_of(results, server, field)
        for server in ("baseline", "appliance")
        for field in ("requests_per_s", "p50_ms", "p99_ms")
    }
    metrics["ratio"] = metrics["appliance_requests_per_s"] / metrics["baseline_requests_per_s"]
    for endpoint in ("login", "me", "key_project"):
        for field in ("requests_per_s", "p50_ms", "p99_ms"):
            metrics[f"{endpoint}_{field}"] = median_of(results, "appliance", field, endpoint)
        metrics[f"{endpoint}_ratio"] = (metrics[f"{endpoint}_requests_per_s"]
                                        / metrics["baseline_requests_per_s"])
    for prefix, names in (("auth", ("login", "me")), ("key_project", ("key_project",))):
        runs = [r for r in results if r.endpoint in names]
        metrics[f"{prefix}_non_2xx"] = sum(r.non_2xx for r in runs)
        metrics[f"{prefix}_socket_errors"] = sum(r.socket_errors for r in runs)
    metrics["seed_users"] = seeded.users
    metrics["seed_api_keys"] = seeded.api_keys
    metrics["startup_s"] = statistics.median(startup)
    metrics["idle_rss_mb"] = idle_rss
    return metrics


def rows_for(metrics: dict[str, float]) -> list[Row]:
    m = metrics
    # Error answers are cheaper than the real one: with any, the ratio means nothing.
    key_errors = m["key_project_non_2xx"] + m["key_project_socket_errors"]
    return [
        Row("baseline health req/s", f"{m['baseline_requests_per_s']:.1f}", "-", None),
        Row("appliance health req/s", f"{m['appliance_requests_per_s']:.1f}", "-", None),
        Row("ratio appliance/baseline", f"{m['ratio']:.3f}", f">= {TARGET_RATIO}",
            m["ratio"] >= TARGET_RATIO),
        Row(f"appliance p50 @ {CONNECTIONS} conns", f"{m['appliance_p50_ms']:.2f} ms", "-", None),
        Row(f"appliance p99 @ {CONNECTIONS} conns", f"{m['appliance_p99_ms']:.2f} ms", "-", None),
        Row(f"baseline p50 / p99 @ {CONNECTIONS} conns",
            f"{m['baseline_p50_ms']:.2f} / {m['baseline_p99_ms']:.2f} ms", "-", None),
        Row("appliance login req/s", f"{m['login_requests_per_s']:.1f}", "-", None),
        Row("ratio login/baseline health", f"{m['login_ratio']:.4f}", "-", None),
        Row(f"login p50 / p99 @ {CONNECTIONS} conns",
            f"{m['login_p50_ms']:.1f} / {m['login_p99_ms']:.1f} ms", "-", None),
        Row("appliance /auth/me req/s", f"{m['me_requests_per_s']:.1f}", "-", None),
        Row("ratio /auth/me/baseline health", f"{m['me_ratio']:.4f}", "-", None),
        Row(f"/auth/me p50 / p99 @ {CONNECTIONS} conns",
            f"{m['me_p50_ms']:.2f} / {m['me_p99_ms']:.2f} ms", "-", None),
        Row("login and /auth/me errors",
            f"{m['auth_non_2xx']:.0f} non-2xx, {m['auth_socket_errors']:.0f} socket", "0",
            m["auth_non_2xx"] + m["auth_socket_errors"] == 0),
        Row("database for GET project",
            f"{m['seed_users']:.0f} users, {m['seed_api_keys']:.0f} keys", "-", None),
        Row("GET project (API key) req/s", f"{m['key_project_requests_per_s']:.1f}", "-",
            None),
        Row("ratio GET project (key)/baseline health", f"{m['key_project_ratio']:.3f}",
            f">= {TARGET_KEY_PROJECT_RATIO}",
            m["key_project_ratio"] >= TARGET_KEY_PROJECT_RATIO and key_errors == 0),
        Row(f"GET project (key) p50 / p99 @ {CONNECTIONS} conns",
            f"{m['key_project_p50_ms']:.2f} / {m['key_project_p99_ms']:.2f} ms", "-", None),
        Row("GET project (API key) errors",
            f"{m['key_project_non_2xx']:.0f} non-2xx, "
            f"{m['key_project_socket_errors']:.0f} socket", "0", key_errors == 0),
        Row("start-up to first 200", f"{m['startup_s']:.3f} s", f"< {TARGET_STARTUP_S} s",
            m["startup_s"] < TARGET_STARTUP_S),
        Row("idle RSS", f"{m['idle_rss_mb']:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB",
            m["idle_rss_mb"] < TARGET_RSS_MB),
    ]


def format_table(rows: list[Row]) -> str:
    cells = [("metric", "value", "target", "ok")] + [
        (r.metric, r.value, r.target, "-" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def first_line(argv: list[str]) -> str | None:
    """The first line a command prints (stdout, else stderr), or None."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else None


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": first_line([shutil.which("git") or "git", "-C", str(REPO_ROOT),
                              "describe", "--always", "--dirty"]),
        "python": platform.python_version(),
        "wrk": first_line([wrk_bin(), "--version"]),
        "cpus": os.cpu_count(),
        "threads": THREADS,
        "connections": CONNECTIONS,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "auth_duration_s": args.auth_duration,
        "auth_rounds": args.auth_rounds,
        "loaded_settings": LOADED_SETTINGS,
        "startup_runs": args.startup_runs,
        "idle_s": args.idle,
    }


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print("start-up (fresh data directories):", flush=True)
    startup = measure_startup(work, args.startup_runs)
    with contextlib.ExitStack() as stack:
        appliance = stack.enter_context(running(start_appliance(work, "appliance",
                                                                LOADED_SETTINGS)))
        startup.append(wait_healthy(appliance))
        print(f"  start-up {len(startup)}: {startup[-1]:.3f} s (the server loaded below)",
              flush=True)
        time.sleep(args.idle)
        idle_rss = rss_mb(appliance.pid)
        print(f"idle RSS after {args.idle:g} s: {idle_rss:.1f} MB", flush=True)
        password = secrets.token_urlsafe(18)
        create_account(appliance, password)
        endpoints = auth_endpoints(work, password, sign_in(appliance, password))
        print(f"account {BENCH_EMAIL} created with create-admin; signed in once", flush=True)
        seeded = seed_database(appliance, work)
        endpoints += (key_project_endpoint(seeded),)
        print(f"database seeded in {seeded.seconds:.1f} s: {seeded.users} users, "
              f"{seeded.api_keys} API keys, {seeded.projects} projects; the bench key "
              "answered 200", flush=True)
        baseline = stack.enter_context(running(start_baseline(work)))
        wait_healthy(baseline)
        print(f"load: wrk -t1 -c{CONNECTIONS} -d{args.duration}s, {args.rounds} rounds "
              f"after a {args.warmup} s warm-up each:", flush=True)
        results = measure_load(appliance, baseline, args)
        print(f"authenticated load on the appliance: wrk -t1 -c{CONNECTIONS} "
              f"-d{args.auth_duration}s, {args.auth_rounds} rounds after a {args.warmup} s "
              "warm-up each:", flush=True)
        results += measure_auth(appliance, endpoints, args)
    metrics = summarize(results, startup, idle_rss, seeded)
    rows = rows_for(metrics)
    return {
        "run": run_info(args),
        "metrics": metrics,
        "targets": {"ratio_min": TARGET_RATIO, "startup_s_max": TARGET_STARTUP_S,
                    "idle_rss_mb_max": TARGET_RSS_MB, "auth_errors_max": 0,
                    "key_project_ratio_min": TARGET_KEY_PROJECT_RATIO,
                    "key_project_errors_max": 0},
        "seed": {"users": seeded.users, "api_keys": seeded.api_keys,
                 "projects": seeded.projects, "service_users": SEED_SERVICE_USERS,
                 "key_rate_limit_rpm": BENCH_KEY_RPM, "seconds": seeded.seconds},
        "checks": {row.metric: row.ok for row in rows if row.ok is not None},
        "all_ok": all(row.ok for row in rows if row.ok is not None),
        "startup_samples_s": startup,
        "wrk_runs": [asdict(result) for result in results],
        "table": [asdict(row) for row in rows],
    }


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the appliance's health, login, /auth/me and "
                    "GET project (API key) endpoints, start-up and memory.")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of wrk warm-up per server, not measured (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating baseline/appliance rounds (default 3)")
    parser.add_argument("--auth-duration", type=int, default=None,
                        help="seconds of each measured login, /auth/me and GET "
                             "project run "
                             f"(default --duration, at most {AUTH_DURATION_MAX})")
    parser.add_argument("--auth-rounds", type=int, default=3,
                        help="alternating login, /auth/me and GET project rounds "
                             "(default 3)")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="extra start-ups timed besides the load server's (default 2)")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds the appliance rests before its RSS is read (default 2)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json",
                        help="JSON results file (default bench-results.json in the repo)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any target is missed")
    args = parser.parse_args(argv)
    if args.auth_duration is None:
        args.auth_duration = min(args.duration, AUTH_DURATION_MAX)
    if (min(args.duration, args.rounds, args.auth_duration, args.auth_rounds) < 1
            or args.warmup < 0 or args.startup_runs < 0):
        parser.error("--duration, --rounds, --auth-duration and --auth-rounds must be >= 1, "
                     "--warmup and --startup-runs >= 0")
    return args


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped and temp dirs removed."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOADAVG:
        print(f"note: load average {load_before:.2f} before the run; other processes compete "
              "for the CPUs, so throughput and latency will be noisy", flush=True)
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="appliance-bench-") as work:
            report = benchmark(args, Path(work))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    report["run"]["wall_s"] = round(time.perf_counter() - began, 1)
    report["run"]["loadavg_1min_before"] = load_before
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(rows_for(report["metrics"])))
    print(f"\nwall time {report['run']['wall_s']} s; results in {args.output}")
    if args.strict and not report["all_ok"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
