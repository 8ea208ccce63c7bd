"""The `core` part of scripts/bench: health, login, /auth/me, GET project and GET instances
throughput, start-up, idle memory, and create-to-running on Incus and Docker (measured by
benchmarks/engines.py, documented there).

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

The database is seeded by benchmarks/seed.py; create-to-running, the last item of the
part, is documented in benchmarks/engines.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import (
    BENCH_EMAIL,
    BENCH_KEY_RPM,
    CONNECTIONS,
    INSTANCES_PATH,
    LOADED_SETTINGS,
    LOGIN_PATH,
    ME_PATH,
    PROJECT_PATH,
    REPO_ROOT,
    TEST_IMAGE,
    THREADS,
    Row,
    Server,
    create_account,
    rss_mb,
    running,
    sign_in,
    start_appliance,
    start_baseline,
    wait_healthy,
)
from benchmarks.creates import CreateSample
from benchmarks.engines import (
    CREATE_DEFINITION,
    TARGET_CREATE_RATIO,
    create_rows,
    measure_creates,
    summarize_creates,
)
from benchmarks.seed import LIST_PAGE, SEED_SERVICE_USERS, Seeded, seed_database
from benchmarks.wrk import HEALTH, NON_200_LUA, Endpoint, WrkResult, load, run_wrk, wrk_bin

AUTH_WRK_TIMEOUT = "10s"  # wrk's default 2 s is close to a sign-in's latency on a busy box
TARGET_RATIO = 0.8
TARGET_STARTUP_S = 1.5
TARGET_RSS_MB = 80.0
TARGET_KEY_PROJECT_RATIO = 0.7
TARGET_INSTANCES_RATIO = 0.5
CHECKED = ("key_project", "instances")  # endpoints whose runs must answer 2xx only

# wrk script for the login load; {body} is a Lua string literal (JSON-quoted ASCII).
LOGIN_LUA = """\
-- scripts/bench: POST a JSON sign-in on every request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""


def auth_endpoints(work: Path, password: str, token: str) -> tuple[Endpoint, Endpoint]:
    """The login load (a Lua script written into `work`) and the /auth/me load."""
    script = work / "login.lua"
    body = json.dumps({"email": BENCH_EMAIL, "password": password})
    script.write_text(LOGIN_LUA.format(body=json.dumps(body)))
    return (Endpoint("login", LOGIN_PATH,
                     ("-s", str(script), "--timeout", AUTH_WRK_TIMEOUT)),
            Endpoint("me", ME_PATH, ("-H", f"Authorization: Bearer {token}")))


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
