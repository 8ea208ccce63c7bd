"""Benchmark the appliance: health, login, /auth/me, GET project and GET instances
throughput, create-to-running latency on Incus and Docker, start-up, idle memory.

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
  `--duration`, at most 5, so a default run with its creates stays near 3 minutes) after
  a `--warmup`.
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
* GET instances with an API key: the same child interpreter adds a project of the bench
  key's owner holding SEED_INSTANCES (500) instances, bulk-inserted as rows (status and
  power state running, an IPv4 address, one succeeded create job and two events each) of
  a plan, an image and a node of the simulated engine ("fake", endpoint fake://bench,
  disabled so the scheduler's reconcile sweep leaves the rows alone). wrk loads GET
  /api/v1/projects/<that project>/instances (the default page of 50, checked once before:
  200, 50 items, has_more) with the same key, in the same alternating rounds. Reported
  like GET project; target ratio to the baseline's health req/s >= TARGET_INSTANCES_RATIO
  (0.5). A wrk script counts every answer that is not 200 (wrk itself counts only
  statuses >= 400): any, or a socket error, misses it (row "GET instances errors").
* create-to-running on Incus and Docker (`--create-rounds`, 0 skips it): the seed also
  prepares a plan of 1 vCPU / 128 MiB / 1 GB, a node per engine (the local Incus node the
  server registered at its first start, a Docker node made like tests/test_engines_e2e.py)
  with its discovered image TEST_IMAGE (appliance-test/busybox, imported by
  scripts/engines; nothing is pulled), and a key of another service-made user with the
  instance scopes. Per engine, after one unmeasured warm-up round (with `--warmup` > 0),
  each round times both, the engine's first in odd rounds: (1) the engine's own path:
  `incus launch IMAGE NAME -c limits.cpu=1 -c limits.memory=128MiB`, then the instance's
  state over Incus's REST socket every `--job-poll` s until eth0 has a global IPv4
  address; `docker run -d --name NAME --cpus 1 -m 128m IMAGE` (it returns once the
  container runs; its address is there then) - and (2) the appliance's: POST
  /api/v1/projects/<p>/instances (name, plan_id, image_id) -> 202, then GET
  .../instances/<id> every `--job-poll` s (0.02; up to one interval plus a request is
  added to the time) on one kept-alive connection until the API shows it running with an
  IPv4 address. "Running" means running with an IPv4 address on both paths: the row
  says running as soon as the engine runs the instance (the driver's `started`), and
  gets its address from the job, which waits for one (up to 20 s); so the engine's is
  counted to its first address too. The ratio of the medians, appliance / engine, has
  target <= TARGET_CREATE_RATIO (1.3). The create job goes on after that (on Docker it
  sets the password with an exec and watches the container keep running, work `docker
  run` does not do): GET .../jobs/<id> is then polled until it succeeded, and that time
  ("to the job's end") is reported beside, with its ratio, without a target. The job's
  own timestamps split that time (queued, running, polled); the steps the polls saw
  are kept in the JSON. Every instance and container made is deleted (the
  appliance's through DELETE and its job, then on the engine directly if anything is
  left), also on failure. An engine that does not answer, or lacks the image or its
  command-line client, is reported as skipped, which misses a target only under
  `--strict`; a create that fails is an error and misses it.

More parts live in their own modules, each documented there: `metering` (the metering
tick for 10,000 instances) and `chart` (GET /usage/chart?days=90 over 10 million usage
records), both beside the SQLite batched-insert rate measured in the same run, in
scripts/bench_billing.py; `webhooks` (deliveries per second with 1,000 queued events,
and the delay a dead endpoint adds to a healthy one) in scripts/bench_webhooks_served.py.
All of the above is the part `core`; `--only` and `--skip` pick parts (default: all).

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
AUTH_DURATION_MAX = 5  # default seconds per authenticated run: keeps a run near 3 min
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

INSTANCES_PATH = "/api/v1/projects/{project_id}/instances"
JOB_PATH = "/api/v1/projects/{project_id}/jobs/{job_id}"
SEED_INSTANCES = 500  # instances in the project whose list is loaded
LIST_PAGE = 50  # the list's default page size
CREATE_KEY_SCOPES = ("instances:read", "instances:write", "instances:delete")
CREATE_ENGINES = ("incus", "docker")
TEST_IMAGE = os.environ.get("APPLIANCE_TEST_IMAGE") or "appliance-test/busybox"
PLAN = {"vcpus": 1, "memory_mb": 128, "disk_gb": 1}  # the created instances' plan
INCUS_SOCKET = "/var/lib/incus/unix.socket"
JOB_POLL_S = 0.02  # default --job-poll
DELETE_POLL_S = 0.05
CREATE_TIMEOUT_S = 90.0  # a create (or delete) taking longer is an error
ENGINE_CALL_TIMEOUT_S = 60

TARGET_RATIO = 0.8
TARGET_STARTUP_S = 1.5
TARGET_RSS_MB = 80.0
TARGET_KEY_PROJECT_RATIO = 0.7
TARGET_INSTANCES_RATIO = 0.5
TARGET_CREATE_RATIO = 1.3
# Parts of a run (--only / --skip): core is everything above; the others live in
# scripts/bench_billing.py and scripts/bench_webhooks_served.py.
PARTS = ("core", "metering", "chart", "webhooks")

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

# wrk script for GET instances: counts the answers that are not 200 (wrk itself counts only
# statuses >= 400) and prints the count in its report.
NON_200_LUA = """\
-- scripts/bench: count every answer that is not 200.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not200 = 0 end
function response(status, headers, body)
  if status ~= 200 then not200 = not200 + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("not200") end
  io.write(string.format("Non-200 responses: %d\\n", total))
end
"""

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_NON_200_RE = re.compile(r"^Non-200 responses: (\d+)", re.MULTILINE)
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
CHECKED = ("key_project", "instances")  # endpoints whose runs must answer 2xx only


@dataclass
class WrkResult:
    server: str
    endpoint: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int  # wrk's count: statuses >= 400
    socket_errors: int
    non_200: int = 0  # counted by NON_200_LUA where the endpoint uses it


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
    non_200 = _NON_200_RE.search(output)
    errors = _SOCKET_ERRORS_RE.search(output)
    return WrkResult(
        server=server, endpoint=endpoint, round=round_no, requests_per_s=float(rps[1]),
        p50_ms=latencies["50"], p99_ms=latencies["99"], requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        non_200=int(non_200[1]) if non_200 else 0,
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
    print(f"  round {round_no} {label:16} {result.requests_per_s:9.1f} req/s  "
          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    if result.non_2xx or result.socket_errors or result.non_200:
        print(f"    warning: {result.non_2xx} non-2xx, {result.non_200} non-200 responses, "
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
    instances_project_id: str  # SEED_INSTANCES instances, listed with `secret`
    instances: int
    create_secret: str  # a key with CREATE_KEY_SCOPES of another user
    create_project_id: str  # that user's default project, where instances are created
    engines: dict[str, dict[str, str]]  # engine: {"image_id", "node"} or {"skipped"}


# Run by `seed_database` as
# `python -c SEED_CODE <scripts dir> <data dir> <result file> <engines, comma-separated>`.
SEED_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); import bench; "
             "bench.seed_in_this_process(sys.argv[2], sys.argv[3], sys.argv[4])")


def seed_in_this_process(data_dir: str, result_path: str, engines: str = "") -> None:
    """Fill the database in `data_dir` to SEED_USERS users and SEED_KEYS API keys, add a
    project of SEED_INSTANCES instances and prepare the `engines` for creates.

    Runs in a child interpreter (see `seed_database`): it imports the appliance and
    activates its settings. Writes the measured keys' secrets and projects, the engines'
    images (or why they are skipped) and the totals as JSON to `result_path`.
    """
    from appliance import create_app
    from appliance.db import database
    from appliance.models import ApiKey, Membership, Project, User
    from appliance.services import clock
    from appliance.services.accounts import api_keys, passwords, users
    from appliance.services.accounts.sessions import Principal
    from appliance.services.ids import hash_token, new_id

    began = time.perf_counter()
    app = create_app({"DATA_DIR": data_dir})
    with app.app_context():
        # The real path first: users with their default project, and the measured key.
        password = secrets.token_urlsafe(18)
        made = [users.create_user(f"bench-user{index}@example.com", password,
                                     verified=True)
                for index in range(SEED_SERVICE_USERS)]
        owner = Principal(made[0], None, "session")
        new = api_keys.create_key(owner, "bench load", list(BENCH_KEY_SCOPES),
                                  rate_limit_rpm=BENCH_KEY_RPM)
        project_id = Project.get(Project.created_by == made[0].id, Project.is_default).id
        creates = prepare_creates(made[1], [e for e in engines.split(",") if e])

        # The rest in bulk, one transaction: users, their default projects, memberships.
        now = clock.now()
        fixed_hash = passwords.hash_password(secrets.token_urlsafe(18))
        user_rows, projects, members = [], [], []
        for index in range(SEED_USERS - User.select().count()):
            created = now - dt.timedelta(minutes=index)
            user_id, prj_id = new_id("usr"), new_id("prj")
            user_rows.append({"id": user_id, "email": f"user{index:05d}@bench.example.com",
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
            for model, rows in ((User, user_rows), (Project, projects), (Membership, members)):
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
        plan = bench_plan()
        instances_project_id, instances = seed_instances(made[0], plan)
        totals = {"users": User.select().count(), "api_keys": ApiKey.select().count(),
                  "projects": Project.select().count()}
    Path(result_path).write_text(json.dumps(
        {"secret": new.secret, "project_id": project_id, **totals,
         "instances_project_id": instances_project_id, "instances": instances, **creates,
         "seconds": round(time.perf_counter() - began, 3)}))


def bench_plan() -> Any:
    """The plan of every instance made here (PLAN: 1 vCPU, 128 MiB, 1 GB)."""
    from appliance.models import Plan
    from appliance.services import clock
    from appliance.services.ids import new_id

    now = clock.now()
    return Plan.create(id=new_id("pln"), slug="bench-small", name="Bench small",
                       price_hourly=1, price_monthly_cap=100, created_at=now,
                       updated_at=now, **PLAN)


def seed_instances(owner: Any, plan: Any) -> tuple[str, int]:
    """A new project of `owner` with SEED_INSTANCES running instances on a simulated node,
    each with its succeeded create job and two events; return its id and live count.

    The node is disabled: the scheduler's reconcile sweep (healthy, enabled nodes) would
    otherwise find none of the rows on the simulated engine and rewrite them all."""
    from appliance.db import database
    from appliance.models import Image, Instance, InstanceEvent, Job
    from appliance.services import clock, projects
    from appliance.services.accounts.sessions import Principal
    from appliance.services.ids import new_id
    from appliance.services.instances import nodes
    from appliance.services.instances.lifecycle import engine_name

    project = projects.create_project(Principal(owner, None, "session"),
                                      "Bench instances").project
    node = nodes.check_health(nodes._insert(
        "bench-simulated", "fake", "fake://bench", options={}, enabled=False,
        capacity=nodes.Capacity(10_000, 10_000_000, 100_000)))
    image = Image.get(Image.node == node.id, Image.active)
    now = clock.now()
    instances, jobs, events = [], [], []
    for index in range(SEED_INSTANCES):
        created = now - dt.timedelta(minutes=index + 1)
        instance_id, job_id = new_id("ins"), new_id("job")
        instances.append({
            "id": instance_id, "project": project.id, "name": f"bench-{index:04d}",
            "plan": plan.id, "image": image.id, "node": node.id,
            "driver_ref": engine_name(instance_id), "status": "running",
            "power_state": "running", "ipv4": f"10.99.{index // 250}.{index % 250 + 2}",
            "ssh_keys": "[]", "created_by": owner.id, "created_at": created,
            "updated_at": created})
        jobs.append({
            "id": job_id, "type": "instance.create", "project": project.id,
            "instance": instance_id, "user": owner.id, "status": "succeeded",
            "params": "{}", "step": 3, "total_steps": 3, "message": "Done", "attempts": 1,
            "created_at": created, "started_at": created,
            "finished_at": created + dt.timedelta(seconds=2)})
        events += [{"id": new_id("iev"), "instance": instance_id, "job": job_id,
                    "type": kind, "message": message, "created_at": created}
                   for kind, message in (("instance.created", f"Created by {owner.email}"),
                                         ("instance.ready", f"Running on {node.name}"))]
    with database.atomic():
        for model, rows in ((Instance, instances), (Job, jobs), (InstanceEvent, events)):
            insert_all(model, rows)
    return project.id, Instance.select().where(Instance.project == project.id,
                                               Instance.deleted_at.is_null()).count()


def prepare_creates(user: Any, engines: list[str]) -> dict[str, Any]:
    """For the create rounds: a key of `user` with CREATE_KEY_SCOPES, its default project,
    and per engine a healthy node with TEST_IMAGE discovered (like _prepare in
    tests/test_engines_e2e.py), or why the engine is skipped."""
    from appliance import drivers
    from appliance.models import Image, Node, Project
    from appliance.services.accounts import api_keys
    from appliance.services.accounts.sessions import Principal
    from appliance.services.instances import nodes

    new = api_keys.create_key(Principal(user, None, "session"), "bench creates",
                              list(CREATE_KEY_SCOPES), rate_limit_rpm=BENCH_KEY_RPM)
    project_id = Project.get(Project.created_by == user.id, Project.is_default).id
    prepared: dict[str, dict[str, str]] = {}
    for engine in engines:
        try:
            drivers.connect(engine, "").info()
        except Exception as exc:  # noqa: BLE001 - DriverError, a missing SDK: skipped
            reason = getattr(exc, "message", None) or str(exc)
            prepared[engine] = {"skipped": f"{engine} does not answer: {reason}"}
            continue
        # The server registered the first reachable local engine when it first started.
        node = Node.get_or_none(Node.engine == engine, Node.endpoint == "") or nodes._insert(
            f"bench-{engine}", engine, "", options={}, enabled=True,
            capacity=nodes.Capacity(8, 8192, 100))
        node = nodes.check_health(node)
        image = Image.get_or_none(Image.node == node.id, Image.ref == TEST_IMAGE,
                                  Image.active)
        if node.health != "healthy" or not node.enabled:
            state = node.health if node.enabled else "disabled"
            prepared[engine] = {"skipped": f"node {node.name} is {state}: "
                                           f"{node.health_message}"}
            continue
        if image is None:
            prepared[engine] = {"skipped": f"{engine} has no image {TEST_IMAGE} "
                                           "(scripts/engines imports it)"}
            continue
        prepared[engine] = {"image_id": image.id, "node": node.name}
    return {"create_secret": new.secret, "create_project_id": project_id,
            "engines": prepared}


def insert_all(model: Any, rows: list[dict[str, Any]]) -> None:
    """`insert_many` in batches that stay within SQLite's bound-parameter limit."""
    from peewee import chunked

    if rows:
        size = max(1, SQLITE_MAX_VARIABLES // len(rows[0]))
        for batch in chunked(rows, size):
            model.insert_many(batch).execute()


def seed_database(server: Server, work: Path, engines: tuple[str, ...] = ()) -> Seeded:
    """Fill the data directory `server` serves (see `seed_in_this_process`) and check the
    measured key over HTTP: GET its project must answer 200 with that project, and GET
    the instances project 200 with a full first page."""
    result_path = work / "seeded.json"
    argv = [sys.executable, "-c", SEED_CODE, str(Path(__file__).resolve().parent),
            str(server.data_dir), str(result_path), ",".join(engines)]
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
    if (seeded.users, seeded.api_keys, seeded.instances) != (SEED_USERS, SEED_KEYS,
                                                              SEED_INSTANCES):
        raise BenchError(f"seeding made {seeded.users} users, {seeded.api_keys} API keys "
                         f"and {seeded.instances} instances, not {SEED_USERS}, {SEED_KEYS} "
                         f"and {SEED_INSTANCES}")
    path = PROJECT_PATH.format(project_id=seeded.project_id)
    status, body = call_json(server.port, "GET", path, api_key=seeded.secret)
    if status != 200 or not isinstance(body, dict) or body.get("id") != seeded.project_id:
        raise BenchError(f"GET {path} with the bench API key answered {status}: {body}\n"
                         f"{server.log_tail()}")
    path = INSTANCES_PATH.format(project_id=seeded.instances_project_id)
    status, body = call_json(server.port, "GET", path, api_key=seeded.secret)
    data = body.get("data") if isinstance(body, dict) else None
    if (status != 200 or not isinstance(data, list) or len(data) != LIST_PAGE
            or not body["page"]["has_more"]):
        raise BenchError(f"GET {path} with the bench API key answered {status} without a "
                         f"full page of {LIST_PAGE}: {str(body)[:500]}\n{server.log_tail()}")
    return seeded


def key_project_endpoint(seeded: Seeded) -> Endpoint:
    """GET the key owner's default project with `X-API-Key`."""
    return Endpoint("key_project", PROJECT_PATH.format(project_id=seeded.project_id),
                    ("-H", f"X-API-Key: {seeded.secret}"), label="/projects/{p}")


def instances_endpoint(seeded: Seeded, work: Path) -> Endpoint:
    """GET the first page (LIST_PAGE) of the instances project with `X-API-Key`; a wrk
    script (written into `work`) counts the answers that are not 200."""
    script = work / "non200.lua"
    script.write_text(NON_200_LUA)
    return Endpoint("instances", INSTANCES_PATH.format(project_id=seeded.instances_project_id),
                    ("-H", f"X-API-Key: {seeded.secret}", "-s", str(script)),
                    label="/p/{p}/instances")


# --- create-to-running on the engines ---------------------------------------------------

CREATE_DEFINITION = ("running with an IPv4 address, on both paths: the appliance's API "
                     "shows the instance so; the engine's create+start returned and, on "
                     "Incus, eth0 has a global IPv4 address")


@dataclass
class CreateSample:
    """One timed create: the appliance's (POST to the API showing it running) or the
    engine's own."""

    engine: str
    path: str  # appliance | engine
    round: int
    seconds: float  # from the request to running with an IPv4 address
    detail: dict[str, float]  # the split: see appliance_create and engine_create


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


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: Incus's REST API."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def incus_ipv4(conn: UnixHTTPConnection, name: str) -> str | None:
    """The first global IPv4 address of a running Incus instance, eth0 first (as the
    appliance's driver reads it), or None."""
    conn.request("GET", f"/1.0/instances/{name}/state")
    state = json.loads(conn.getresponse().read()).get("metadata") or {}
    if state.get("status") != "Running":
        return None
    networks = sorted((state.get("network") or {}).items(),
                      key=lambda item: (item[0] != "eth0", item[0]))
    for nic, network in networks:
        for address in (network.get("addresses") or []) if nic != "lo" else []:
            value = address.get("address", "")
            if (address.get("family") == "inet" and address.get("scope") == "global"
                    and not value.startswith(("127.", "169.254."))):
                return value
    return None


def engine_command(argv: list[str], what: str) -> str:
    """Run an engine's command-line client; its stdout. BenchError when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=ENGINE_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} took more than {ENGINE_CALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what} failed with status {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def engine_cli(engine: str) -> str:
    found = shutil.which(engine)
    if not found:
        raise BenchError(f"the {engine} command is missing")
    return found


def engine_remove(engine: str, name: str) -> None:
    """Remove an instance or container from the engine if it is there (not timed)."""
    argv = ([engine_cli(engine), "rm", "-f", name] if engine == "docker"
            else [engine_cli(engine), "delete", "-f", name])
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=ENGINE_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = (done.stderr or done.stdout).strip()
    if done.returncode != 0 and not re.search(r"no such|not found", output, re.IGNORECASE):
        print(f"bench: WARNING: {' '.join(argv[1:])} failed: {output[:300]}",
              file=sys.stderr, flush=True)


def engine_create(engine: str, name: str, round_no: int, poll_s: float) -> CreateSample:
    """The engine's own create+start of TEST_IMAGE with PLAN's limits, timed to running
    with an IPv4 address; detail `started_s`: when its command returned (running)."""
    cli = engine_cli(engine)
    began = time.perf_counter()
    if engine == "docker":
        engine_command([cli, "run", "-d", "--name", name, "--cpus", str(PLAN["vcpus"]),
                        "-m", f"{PLAN['memory_mb']}m", TEST_IMAGE], f"docker run {name}")
        seconds = time.perf_counter() - began
        shown = engine_command([cli, "inspect", "-f", "{{.State.Status}} {{range "
                                ".NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
                               f"docker inspect {name}").split()
        if shown[:1] != ["running"] or len(shown) < 2:  # checked after the clock stopped
            raise BenchError(f"docker run {name}: not running with an address: {shown}")
        return CreateSample(engine, "engine", round_no, seconds, {"started_s": seconds})
    engine_command([cli, "launch", TEST_IMAGE, name, "-q", "-c", f"limits.cpu={PLAN['vcpus']}",
                    "-c", f"limits.memory={PLAN['memory_mb']}MiB"], f"incus launch {name}")
    started = time.perf_counter() - began
    conn = UnixHTTPConnection(INCUS_SOCKET)
    try:
        while incus_ipv4(conn, name) is None:
            if time.perf_counter() - began > CREATE_TIMEOUT_S:
                raise BenchError(f"incus launch {name}: no IPv4 address after "
                                 f"{CREATE_TIMEOUT_S:.0f} s")
            time.sleep(poll_s)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"asking Incus for the state of {name} failed: {exc}") from None
    finally:
        conn.close()
    return CreateSample(engine, "engine", round_no, time.perf_counter() - began,
                        {"started_s": started})


def wait_job(api: ApiClient, project_id: str, job_id: str, poll_s: float, *,
             began: float, steps: dict[str, float] | None = None) -> dict[str, Any]:
    """GET the job every `poll_s` s until it succeeded or failed; in `steps`, when each
    progress step of the unfinished job was first seen (seconds since `began`, a
    perf_counter; a step shorter than a poll is not seen)."""
    path = JOB_PATH.format(project_id=project_id, job_id=job_id)
    while True:
        status, job = api.call("GET", path)
        if status != 200 or not isinstance(job, dict):
            raise BenchError(f"GET {path} answered {status}: {job}")
        if job["status"] in ("succeeded", "failed"):
            return job
        if steps is not None:
            steps.setdefault(f"step{job['progress']['step']}_seen_s",
                             time.perf_counter() - began)
        if time.perf_counter() - began > CREATE_TIMEOUT_S:
            raise BenchError(f"job {job_id} ({job['type']}) did not finish within "
                             f"{CREATE_TIMEOUT_S:.0f} s: {job['progress']['message']}")
        time.sleep(poll_s)


def _timestamp(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_running(api: ApiClient, path: str, poll_s: float, *, began: float) -> None:
    """GET the instance every `poll_s` s until the API shows it running with an IPv4
    address."""
    while True:
        status, instance = api.call("GET", path)
        if status != 200 or not isinstance(instance, dict):
            raise BenchError(f"GET {path} answered {status}: {instance}")
        if instance["status"] == "running" and instance["ipv4"]:
            return
        if instance["status"] == "failed":
            raise BenchError(f"the instance failed: {instance}")
        if time.perf_counter() - began > CREATE_TIMEOUT_S:
            raise BenchError(f"{path} was not running with an IPv4 address within "
                             f"{CREATE_TIMEOUT_S:.0f} s: {instance['status']}")
        time.sleep(poll_s)


def appliance_create(api: ApiClient, seeded: Seeded, engine: str, *, name: str,
                     round_no: int, poll_s: float, made: list[str]) -> CreateSample:
    """POST an instance of TEST_IMAGE, poll it until the API shows it running with an
    IPv4 address (the time measured), then its job to success (the id goes into `made` at
    once, for the clean-up). Detail: `accepted_s` (the 202), `done_s` (the job's success
    seen), `queued_s` and `job_s` (the job's own started - created and finished -
    started), `after_job_s` (finished to seen by the poll) and `stepN_seen_s` (when a poll
    first saw progress step N of the job, after the instance ran)."""
    base = INSTANCES_PATH.format(project_id=seeded.create_project_id)
    body = {"name": name, "plan_id": "bench-small",
            "image_id": seeded.engines[engine]["image_id"]}
    began_wall, began = time.time(), time.perf_counter()
    status, accepted = api.call("POST", base, body)
    accepted_s = time.perf_counter() - began
    if status != 202 or not isinstance(accepted, dict):
        raise BenchError(f"POST {base} answered {status}: {accepted}")
    made.append(accepted["instance"]["id"])
    wait_running(api, f"{base}/{made[-1]}", poll_s, began=began)
    seconds = time.perf_counter() - began
    steps: dict[str, float] = {}
    job = wait_job(api, seeded.create_project_id, accepted["job"]["id"], poll_s,
                   began=began, steps=steps)
    done_s = time.perf_counter() - began
    if job["status"] != "succeeded":
        raise BenchError(f"the create job on {engine} failed ({job['error_code']}): "
                         f"{job['error']}")
    status, instance = api.call("GET", f"{base}/{made[-1]}")  # checked, not timed
    if status != 200 or instance["status"] != "running" or not instance["ipv4"]:
        raise BenchError(f"after its create job the instance is not running with an IPv4 "
                         f"address: {status} {instance}")
    created, started, finished = (_timestamp(job[key])
                                  for key in ("created_at", "started_at", "finished_at"))
    return CreateSample(engine, "appliance", round_no, seconds, {
        "accepted_s": accepted_s, "done_s": done_s, "queued_s": started - created,
        "job_s": finished - started, "after_job_s": began_wall + done_s - finished, **steps})


def appliance_delete(api: ApiClient, seeded: Seeded, engine: str, instance_id: str) -> None:
    """DELETE the instance and wait for its job; if that fails, remove it on the engine."""
    path = f"{INSTANCES_PATH.format(project_id=seeded.create_project_id)}/{instance_id}"
    try:
        status, body = api.call("DELETE", path)
        if status != 202:
            raise BenchError(f"DELETE {path} answered {status}: {body}")
        job = wait_job(api, seeded.create_project_id, body["job"]["id"], DELETE_POLL_S,
                       began=time.perf_counter())
        if job["status"] != "succeeded":
            raise BenchError(f"the delete job failed: {job['error']}")
    except BenchError as exc:
        print(f"bench: WARNING: deleting {instance_id} through the API: {exc}; removing it "
              "on the engine", file=sys.stderr, flush=True)
        engine_remove(engine, "ins-" + instance_id.removeprefix("ins_"))


def create_round(api: ApiClient, seeded: Seeded, engine: str, round_no: int,
                 poll_s: float) -> tuple[CreateSample, CreateSample]:
    """One create on each path, the engine's first in odd rounds; each deleted after."""
    def own() -> CreateSample:
        name = f"bench-{engine}-{secrets.token_hex(4)}"
        try:
            return engine_create(engine, name, round_no, poll_s)
        finally:
            engine_remove(engine, name)

    def appliance() -> CreateSample:
        made: list[str] = []
        try:
            return appliance_create(api, seeded, engine, name=f"bench-{secrets.token_hex(4)}",
                                    round_no=round_no, poll_s=poll_s, made=made)
        finally:
            for instance_id in made:
                appliance_delete(api, seeded, engine, instance_id)

    if round_no % 2:
        engine_sample = own()
        return engine_sample, appliance()
    appliance_sample = appliance()
    return own(), appliance_sample


def measure_creates(appliance: Server, seeded: Seeded, args: argparse.Namespace,
                    ) -> tuple[list[CreateSample], dict[str, str]]:
    """Per engine, a warm-up round (with `--warmup` > 0) and `--create-rounds` rounds; the
    samples and each engine's outcome: measured, skipped: why, or error: what."""
    samples: list[CreateSample] = []
    outcomes: dict[str, str] = {}
    api = ApiClient(appliance.port, seeded.create_secret)
    try:
        for engine in args.engines:
            skipped = seeded.engines.get(engine, {}).get("skipped")
            if not skipped and not shutil.which(engine):
                skipped = f"the {engine} command is missing"
            if not skipped and engine == "incus" and not os.access(INCUS_SOCKET, os.W_OK):
                skipped = f"cannot use Incus's socket {INCUS_SOCKET}"
            if skipped:
                outcomes[engine] = f"skipped: {skipped}"
                print(f"  {engine}: skipped: {skipped}", flush=True)
                continue
            try:
                for round_no in range(0 if args.warmup > 0 else 1, args.create_rounds + 1):
                    own, mine = create_round(api, seeded, engine, round_no, args.job_poll)
                    print_create_round(own, mine)
                    if round_no:
                        samples += [own, mine]
                outcomes[engine] = "measured"
            except BenchError as exc:
                outcomes[engine] = f"error: {exc}"
                print(f"bench: ERROR: creating on {engine}: {exc}", file=sys.stderr, flush=True)
    finally:
        api.close()
    return samples, outcomes


def print_create_round(own: CreateSample, mine: CreateSample) -> None:
    d = mine.detail
    label = f"round {own.round}" if own.round else "warm-up"
    print(f"  {label:8} {own.engine:6} engine {own.seconds:6.3f} s  appliance "
          f"{mine.seconds:6.3f} s (job's end {d['done_s']:6.3f} s = 202 "
          f"{d['accepted_s'] * 1000:4.0f} ms, queued "
          f"{d['queued_s'] * 1000:3.0f} ms, job {d['job_s']:.3f} s, seen "
          f"+{d['after_job_s'] * 1000:3.0f} ms)", flush=True)


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

    A GET project or instances run with any non-2xx answer or socket error is reported
    as an error.
    """
    if args.warmup > 0:
        for endpoint in endpoints:
            run_wrk(appliance.port, args.warmup, endpoint)
    results = []
    for round_no in range(1, args.auth_rounds + 1):
        for endpoint in endpoints:
            result = load(appliance, args.auth_duration, round_no, endpoint)
            if endpoint.name in CHECKED and (result.non_2xx or result.non_200
                                             or result.socket_errors):
                print(f"bench: ERROR: GET {endpoint.label} with the API key had "
                      f"{result.non_2xx} non-2xx answers, {result.non_200} not 200 and "
                      f"{result.socket_errors} socket "
                      "errors; its req/s is not valid", file=sys.stderr, flush=True)
            results.append(result)
    return results


def median_of(results: list[WrkResult], server: str, field: str,
              endpoint: str = HEALTH.name) -> float:
    return statistics.median(getattr(r, field) for r in results
                             if r.server == server and r.endpoint == endpoint)


def summarize(results: list[WrkResult], startup: list[float], idle_rss: float,
              seeded: Seeded, *, creates: list[CreateSample], outcomes: dict[str, str],
              ) -> dict[str, Any]:
    metrics = {
        f"{server}_{field}": median_of(results, server, field)
        for server in ("baseline", "appliance")
        for field in ("requests_per_s", "p50_ms", "p99_ms")
    }
    metrics["ratio"] = metrics["appliance_requests_per_s"] / metrics["baseline_requests_per_s"]
    for endpoint in ("login", "me", *CHECKED):
        for field in ("requests_per_s", "p50_ms", "p99_ms"):
            metrics[f"{endpoint}_{field}"] = median_of(results, "appliance", field, endpoint)
        metrics[f"{endpoint}_ratio"] = (metrics[f"{endpoint}_requests_per_s"]
                                        / metrics["baseline_requests_per_s"])
    for prefix, names in (("auth", ("login", "me")), *((name, (name,)) for name in CHECKED)):
        runs = [r for r in results if r.endpoint in names]
        metrics[f"{prefix}_non_2xx"] = sum(r.non_2xx for r in runs)
        metrics[f"{prefix}_non_200"] = sum(r.non_200 for r in runs)
        metrics[f"{prefix}_socket_errors"] = sum(r.socket_errors for r in runs)
    metrics["seed_users"] = seeded.users
    metrics["seed_api_keys"] = seeded.api_keys
    metrics["seed_instances"] = seeded.instances
    metrics.update(summarize_creates(creates, outcomes))
    metrics["startup_s"] = statistics.median(startup)
    metrics["idle_rss_mb"] = idle_rss
    return metrics


def summarize_creates(creates: list[CreateSample], outcomes: dict[str, str],
                      ) -> dict[str, Any]:
    """Per engine: its outcome and, when measured, the medians of each path, their ratio
    and the medians of the appliance's split (`create_<engine>_...`)."""
    metrics: dict[str, Any] = {}
    for engine, outcome in outcomes.items():
        prefix = f"create_{engine}"
        metrics[f"{prefix}_outcome"] = outcome
        if outcome != "measured":
            continue
        for path in ("appliance", "engine"):
            samples = [c for c in creates if c.engine == engine and c.path == path]
            metrics[f"{prefix}_{path}_s"] = statistics.median(c.seconds for c in samples)
            # The split's parts every sample has (a short step is not always seen).
            for key in sorted(set.intersection(*(set(c.detail) for c in samples))):
                metrics[f"{prefix}_{path}_{key}"] = statistics.median(c.detail[key]
                                                                      for c in samples)
        metrics[f"{prefix}_ratio"] = (metrics[f"{prefix}_appliance_s"]
                                      / metrics[f"{prefix}_engine_s"])
        metrics[f"{prefix}_done_ratio"] = (metrics[f"{prefix}_appliance_done_s"]
                                           / metrics[f"{prefix}_engine_s"])
    return metrics


def create_rows(m: dict[str, Any], strict: bool) -> list[Row]:
    """Rows of the create-to-running comparison; a skipped engine misses its target only
    when `strict`."""
    rows = []
    for engine in CREATE_ENGINES:
        prefix = f"create_{engine}"
        outcome = m.get(f"{prefix}_outcome")
        if outcome is None:
            continue
        metric = f"create to running+IPv4, {engine}: ratio appliance/engine"
        target = f"<= {TARGET_CREATE_RATIO}"
        if outcome != "measured":
            skipped = outcome.startswith("skipped")
            rows.append(Row(metric, outcome[:70], target, None if skipped and not strict
                            else False))
            continue
        ratio = m[f"{prefix}_ratio"]
        rows.append(Row(f"create to running+IPv4, {engine}: appliance / engine",
                        f"{m[f'{prefix}_appliance_s']:.3f} / {m[f'{prefix}_engine_s']:.3f} s",
                        "-", None))
        rows.append(Row(metric, f"{ratio:.2f}", target, ratio <= TARGET_CREATE_RATIO))
        rows.append(Row(f"  {engine} to the create job's end: ratio appliance/engine",
                        f"{m[f'{prefix}_appliance_done_s']:.3f} s: "
                        f"{m[f'{prefix}_done_ratio']:.2f}", "-", None))
        split = (f"202 {m[f'{prefix}_appliance_accepted_s'] * 1000:.0f} ms, queued "
                 f"{m[f'{prefix}_appliance_queued_s'] * 1000:.0f} ms, job "
                 f"{m[f'{prefix}_appliance_job_s']:.3f} s, seen "
                 f"+{m[f'{prefix}_appliance_after_job_s'] * 1000:.0f} ms")
        rows.append(Row(f"  {engine} job's end split (medians)", split, "-", None))
    return rows


def rows_for(metrics: dict[str, Any], strict: bool = False) -> list[Row]:
    m = metrics
    # Error answers are cheaper than the real one: with any, the ratio means nothing.
    key_errors = m["key_project_non_2xx"] + m["key_project_socket_errors"]
    list_errors = (m["instances_non_2xx"] + m["instances_non_200"]
                   + m["instances_socket_errors"])
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
        Row("instances in the listed project", f"{m['seed_instances']:.0f}, page of "
            f"{LIST_PAGE}", "-", None),
        Row("GET instances (API key) req/s", f"{m['instances_requests_per_s']:.1f}", "-",
            None),
        Row("ratio GET instances (key)/baseline health", f"{m['instances_ratio']:.3f}",
            f">= {TARGET_INSTANCES_RATIO}",
            m["instances_ratio"] >= TARGET_INSTANCES_RATIO and list_errors == 0),
        Row(f"GET instances (key) p50 / p99 @ {CONNECTIONS} conns",
            f"{m['instances_p50_ms']:.2f} / {m['instances_p99_ms']:.2f} ms", "-", None),
        Row("GET instances (API key) errors",
            f"{m['instances_non_200']:.0f} non-200, "
            f"{m['instances_socket_errors']:.0f} socket", "0", list_errors == 0),
        *create_rows(m, strict),
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
        "create_rounds": args.create_rounds,
        "engines": list(args.engines),
        "job_poll_s": args.job_poll,
        "test_image": TEST_IMAGE,
    }


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The parts in `args.parts`: core (the above), metering, chart, webhooks."""
    import bench_billing
    import bench_webhooks_served

    report = core_benchmark(args, work) if "core" in args.parts else {
        "run": run_info(args), "metrics": {}, "targets": {}}
    metrics = report["metrics"]
    if {"metering", "chart"} & set(args.parts):
        metrics["billing_insert_rows_per_s"] = bench_billing.insert_rate(work)
        print(f"baseline: SQLite batched insert {metrics['billing_insert_rows_per_s']:,.0f} "
              "rows/s", flush=True)
    if "metering" in args.parts:
        print(f"metering tick, {bench_billing.METERING_INSTANCES:,} instances:", flush=True)
        metrics.update(bench_billing.measure_metering(work))
    if "chart" in args.parts:
        print("GET /usage/chart?days=90 over ~10 million usage records:", flush=True)
        chart, runs = bench_billing.measure_chart(work, args.warmup)
        metrics.update(chart)
        report.setdefault("wrk_runs", []).extend(asdict(r) for r in runs)
    if "webhooks" in args.parts:
        metrics.update(bench_webhooks_served.measure(work))
    report["targets"] |= bench_billing.TARGETS | bench_webhooks_served.TARGETS
    rows = all_rows(metrics, args.strict)
    report["checks"] = {row.metric: row.ok for row in rows if row.ok is not None}
    report["all_ok"] = all(row.ok for row in rows if row.ok is not None)
    report["table"] = [asdict(row) for row in rows]
    return report


def all_rows(metrics: dict[str, Any], strict: bool = False) -> list[Row]:
    import bench_billing
    import bench_webhooks_served

    rows = rows_for(metrics, strict) if "ratio" in metrics else []
    return rows + bench_billing.rows(metrics) + bench_webhooks_served.rows(metrics, strict)


def core_benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
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
        seeded = seed_database(appliance, work, args.engines if args.create_rounds else ())
        endpoints += (key_project_endpoint(seeded), instances_endpoint(seeded, work))
        print(f"database seeded in {seeded.seconds:.1f} s: {seeded.users} users, "
              f"{seeded.api_keys} API keys, {seeded.projects} projects, {seeded.instances} "
              "instances in one of them; the bench key answered 200", flush=True)
        baseline = stack.enter_context(running(start_baseline(work)))
        wait_healthy(baseline)
        print(f"load: wrk -t1 -c{CONNECTIONS} -d{args.duration}s, {args.rounds} rounds "
              f"after a {args.warmup} s warm-up each:", flush=True)
        results = measure_load(appliance, baseline, args)
        print(f"authenticated load on the appliance: wrk -t1 -c{CONNECTIONS} "
              f"-d{args.auth_duration}s, {args.auth_rounds} rounds after a {args.warmup} s "
              "warm-up each:", flush=True)
        results += measure_auth(appliance, endpoints, args)
        creates, outcomes = [], {}
        if args.create_rounds:
            print(f"create to running ({CREATE_DEFINITION}); jobs polled every "
                  f"{args.job_poll * 1000:g} ms; {args.create_rounds} rounds per engine"
                  f"{' after a warm-up round' if args.warmup > 0 else ''}:", flush=True)
            creates, outcomes = measure_creates(appliance, seeded, args)
    metrics = summarize(results, startup, idle_rss, seeded, creates=creates, outcomes=outcomes)
    rows = rows_for(metrics, args.strict)
    return {
        "run": run_info(args),
        "metrics": metrics,
        "targets": {"ratio_min": TARGET_RATIO, "startup_s_max": TARGET_STARTUP_S,
                    "idle_rss_mb_max": TARGET_RSS_MB, "auth_errors_max": 0,
                    "key_project_ratio_min": TARGET_KEY_PROJECT_RATIO,
                    "key_project_errors_max": 0,
                    "instances_ratio_min": TARGET_INSTANCES_RATIO, "instances_errors_max": 0,
                    "create_ratio_max": TARGET_CREATE_RATIO},
        "seed": {"users": seeded.users, "api_keys": seeded.api_keys,
                 "projects": seeded.projects, "service_users": SEED_SERVICE_USERS,
                 "key_rate_limit_rpm": BENCH_KEY_RPM, "instances": seeded.instances,
                 "engines": seeded.engines, "seconds": seeded.seconds},
        "create_definition": CREATE_DEFINITION,
        "creates": [asdict(sample) for sample in creates],
        "checks": {row.metric: row.ok for row in rows if row.ok is not None},
        "all_ok": all(row.ok for row in rows if row.ok is not None),
        "startup_samples_s": startup,
        "wrk_runs": [asdict(result) for result in results],
        "table": [asdict(row) for row in rows],
    }


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the appliance's health, login, /auth/me, GET project and "
                    "GET instances (API key) endpoints, create-to-running on Incus and "
                    "Docker, start-up and memory.")
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
    parser.add_argument("--create-rounds", type=int, default=5,
                        help="alternating engine/appliance creates per engine after a "
                             "warm-up one (default 5; 0 skips them)")
    parser.add_argument("--engines", default=",".join(CREATE_ENGINES),
                        help="engines to create on, comma-separated (default "
                             f"{','.join(CREATE_ENGINES)})")
    parser.add_argument("--job-poll", type=float, default=JOB_POLL_S,
                        help="seconds between polls of a create job and of Incus's state "
                             f"(default {JOB_POLL_S})")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json",
                        help="JSON results file (default bench-results.json in the repo)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="parts to run, comma-separated, from "
                             f"{','.join(PARTS)} (default all)")
    parser.add_argument("--skip", default="",
                        help="parts not to run, comma-separated (e.g. chart,webhooks)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any target is missed")
    args = parser.parse_args(argv)
    args.engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    only, skip = ({p.strip() for p in text.split(",") if p.strip()}
                  for text in (args.only, args.skip))
    if not only | skip <= set(PARTS):
        parser.error(f"--only and --skip take {', '.join(PARTS)}")
    args.parts = tuple(p for p in PARTS if p in only - skip)
    if not set(args.engines) <= set(CREATE_ENGINES) or args.create_rounds < 0:
        parser.error(f"--engines takes {' and '.join(CREATE_ENGINES)}; --create-rounds "
                     "must be >= 0")
    if not 0 < args.job_poll <= 1:
        parser.error("--job-poll must be between 0 and 1 s")
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
    print(format_table(all_rows(report["metrics"], args.strict)))
    print(f"\nwall time {report['run']['wall_s']} s; results in {args.output}")
    if args.strict and not report["all_ok"]:
        return 1
    return 0


if __name__ == "__main__":
    # scripts/bench_*.py import `bench`: let them share this module (and its BenchError).
    sys.modules.setdefault("bench", sys.modules[__name__])
    sys.exit(main(sys.argv[1:]))
