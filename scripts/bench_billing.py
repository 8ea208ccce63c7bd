"""Billing benchmarks for scripts/bench: the metering tick and the usage chart at scale.

Both are printed next to a baseline measured in the same run:

* SQLite batched-insert rate (`insert_rate`): BASELINE_ROWS usage-record-like rows (the
  columns the tick writes) inserted with one `executemany` in one transaction into a
  table without indexes, in a fresh database file with the appliance's PRAGMAs (WAL,
  synchronous=FULL); rows/s. It says how fast this machine's SQLite writes, so the two
  numbers below can be read against it (REFERENCE.md measured about 250k rows/s here).

* Metering tick for METERING_INSTANCES (10,000) instances (`measure_metering`): a child
  interpreter builds a fresh data directory with the appliance's migrations and, with its
  models, bulk-inserts METERING_USERS (1,000) accounts with their default projects, a
  plan, a disabled simulated node with its image, and the instances spread over the
  accounts, all created five minutes into the current hour. It then times
  `appliance.services.billing.metering.tick(now)`, the scheduler's own task, three times: the
  first tick (one record, one ledger debit and one rollup row per instance: 10,000 of
  each), a catch-up CATCH_UP_HOURS (4) hours later (40,000 records, as after a
  downtime) and a re-run at the same moment (nothing to add; the idempotence check's
  cost). Target: the hourly tick (the first) under TARGET_TICK_S (2 s), the catch-up
  under TARGET_TICK_S per hour caught up; the record counts must be exact or the row
  fails.

* GET /api/v1/usage/chart?days=90 with 10 million usage records (`measure_chart`): a
  child interpreter builds a data directory (migrations, then with the models:
  CHART_USERS accounts, a plan priced so its monthly cap never binds, CHART_INSTANCES
  (4,630) instances on the simulated node, the measured account owning every tenth one
  in CHART_PROJECTS projects, and an API key of that account with `usage:read`). The
  usage is then what the tick would have written for CHART_HOURS (2,160: 90 days) hours
  of each instance, up to the current hour: 10,000,800 `usage_record` rows inserted by
  one INSERT ... SELECT over a recursive CTE (instance by instance in id order, the
  indexes in place: the fastest order measured here), the `usage_daily` rollup rows
  computed from the same instances and hours, and each instance's `usage_meter` row.
  Seeding runs before the server starts, with synchronous=OFF and a rollback journal; it
  is set-up, not the appliance, so its time is shown against an aim of 60 s but is never
  a missed target. Two checks make the data trustworthy: the sums of `usage_record` and
  `usage_daily` are equal, and a metering tick at the seeding moment records nothing.
  Ledger entries are not seeded (the chart never reads them). Then `appliance serve`
  runs on that directory and wrk loads the chart with the key: one connection
  (sequential requests: the endpoint's own latency) for CHART_ROUNDS rounds after a
  warm-up, the median p99 against TARGET_CHART_P99_MS (50 ms); then 8 connections once
  for throughput (no target: at 8 connections on two cores the latency is mostly
  queueing). Any answer but 200 fails the row.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench

BASELINE_ROWS = 200_000
METERING_INSTANCES = 10_000
METERING_USERS = 1_000
CATCH_UP_HOURS = 4
TARGET_TICK_S = 2.0

CHART_INSTANCES = 4_630
CHART_HOURS = 90 * 24
CHART_USERS = 100
CHART_PROJECTS = 10  # the measured account's projects
CHART_PRICE = 2  # per hour; the monthly cap (744 hours) never binds
CHART_PATH = "/api/v1/usage/chart?days=90"
CHART_ROUNDS = 3
CHART_SECONDS = 5
TARGET_CHART_P99_MS = 50.0
TARGET_SEED_S = 60.0
CHILD_TIMEOUT_S = 600

CHILD_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_billing; "
              "getattr(bench_billing, sys.argv[2])(*sys.argv[3:])")

USAGE_COLUMNS = ("user_id", "project_id", "subject_id", "resource", "sku", "hour",
                 "quantity", "unit_price", "amount", "created_at")


# --- the baseline ------------------------------------------------------------------------


def insert_rate(work: Path, rows: int = BASELINE_ROWS) -> float:
    """Rows/s of one executemany of usage-record-like rows in one transaction, WAL and
    synchronous=FULL, in a fresh file under `work`."""
    path = Path(tempfile.mkdtemp(prefix="insert-rate-", dir=work)) / "rate.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE usage_like (id INTEGER PRIMARY KEY, user_id TEXT, "
                     "project_id TEXT, subject_id TEXT, resource TEXT, sku TEXT, hour TEXT, "
                     "quantity INTEGER, unit_price INTEGER, amount INTEGER, created_at TEXT)")
        stamp = "2025-01-01 00:00:00"
        data = [(f"usr_{n % 1000:020d}", f"prj_{n % 1000:020d}", f"ins_{n:020d}", "instance",
                 "bench-small", stamp, 1, 2, 2, stamp) for n in range(rows)]
        sql = (f"INSERT INTO usage_like ({', '.join(USAGE_COLUMNS)}) "  # noqa: S608
               f"VALUES ({', '.join('?' * len(USAGE_COLUMNS))})")
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, data)
        conn.execute("COMMIT")
        return rows / (time.perf_counter() - began)
    finally:
        conn.close()


# --- seeding helpers (in the child interpreter) --------------------------------------------


def _child(function: str, *args: str) -> dict[str, Any]:
    """Run `function(*args, result_path)` of this module in a child interpreter."""
    result = Path(tempfile.mkstemp(prefix=f"{function}-", suffix=".json")[1])
    argv = [sys.executable, "-c", CHILD_CODE, str(Path(__file__).resolve().parent), function,
            *args, str(result)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=bench.server_env(),
                              timeout=CHILD_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise bench.BenchError(f"{function} took more than {CHILD_TIMEOUT_S} s") from None
    try:
        if done.returncode != 0 or not result.read_text():
            raise bench.BenchError(f"{function} failed with status {done.returncode}:\n"
                                   f"{done.stdout}{done.stderr}")
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


def _accounts(count: int, label: str) -> list[tuple[str, str]]:
    """Bulk-insert `count` verified accounts, each with its default project and owner
    membership; return (user id, project id) pairs."""
    from appliance.db import database
    from appliance.models import Membership, Project, User
    from appliance.services import clock
    from appliance.services.accounts import passwords
    from appliance.services.ids import new_id

    now = clock.now()
    fixed_hash = passwords.hash_password(secrets.token_urlsafe(18))
    user_rows, projects, members, pairs = [], [], [], []
    for index in range(count):
        user_id, project_id = new_id("usr"), new_id("prj")
        pairs.append((user_id, project_id))
        user_rows.append({"id": user_id, "email": f"{label}{index:05d}@bench.example.com",
                      "display_name": f"{label} {index}", "password_hash": fixed_hash,
                      "role": "user", "status": "active", "email_verified_at": now,
                      "password_changed_at": now, "created_at": now, "updated_at": now})
        projects.append({"id": project_id, "name": "Default project", "is_default": True,
                         "created_by": user_id, "created_at": now, "updated_at": now})
        members.append({"project": project_id, "user": user_id, "role": "owner",
                        "created_at": now, "updated_at": now})
    with database.atomic():
        for model, rows in ((User, user_rows), (Project, projects), (Membership, members)):
            bench.insert_all(model, rows)
    return pairs


def _plan(slug: str, price: int, cap: int) -> Any:
    from appliance.models import Plan
    from appliance.services import clock
    from appliance.services.ids import new_id

    now = clock.now()
    return Plan.create(id=new_id("pln"), slug=slug, name=slug, price_hourly=price,
                       price_monthly_cap=cap, created_at=now, updated_at=now, **bench.PLAN)


def _instances(owners: list[tuple[str, str]], plan: Any, created: dt.datetime,
               ) -> list[tuple[str, str, str]]:
    """Bulk-insert one running instance per (user id, project id) in `owners` on a
    disabled simulated node (see bench.seed_instances); return (instance, user, project)."""
    from appliance.db import database
    from appliance.models import Image, Instance
    from appliance.services.ids import new_id
    from appliance.services.instances import nodes
    from appliance.services.instances.lifecycle import engine_name

    node = nodes.check_health(nodes._insert(
        "bench-metered", "fake", "fake://bench-metered", options={}, enabled=False,
        capacity=nodes.Capacity(1_000_000, 1_000_000_000, 10_000_000)))
    image = Image.get(Image.node == node.id, Image.active)
    rows, made = [], []
    for index, (user_id, project_id) in enumerate(owners):
        instance_id = new_id("ins")
        made.append((instance_id, user_id, project_id))
        rows.append({"id": instance_id, "project": project_id, "name": f"m-{index:05d}",
                     "plan": plan.id, "image": image.id, "node": node.id,
                     "driver_ref": engine_name(instance_id), "status": "running",
                     "power_state": "running",
                     "ipv4": f"10.{100 + index // 65536}.{index // 256 % 256}.{index % 256}",
                     "ssh_keys": "[]", "created_by": user_id, "created_at": created,
                     "updated_at": created})
    with database.atomic():
        bench.insert_all(Instance, rows)
    return made


# --- the metering tick -----------------------------------------------------------------


def metering_in_child(data_dir: str, result_path: str) -> None:
    """Seed METERING_INSTANCES instances and time three ticks (see the module docstring)."""
    from appliance import create_app
    from appliance.db import database
    from appliance.models import Instance, LedgerEntry, UsageDaily, UsageRecord
    from appliance.services import clock
    from appliance.services.billing import metering

    app = create_app({"DATA_DIR": data_dir})
    with app.app_context(), database.connection_context():
        began = time.perf_counter()
        now = clock.now()
        hour = metering.hour_of(now)
        accounts = _accounts(METERING_USERS, "metered")
        plan = _plan("bench-metered", 3, 3 * 744)
        owners = [accounts[n % len(accounts)] for n in range(METERING_INSTANCES)]
        _instances(owners, plan, hour + dt.timedelta(minutes=5))
        seconds = time.perf_counter() - began
        first_at = hour + dt.timedelta(minutes=10)
        timings = {}
        for name, at in (("first", first_at),
                         ("catch_up", first_at + dt.timedelta(hours=CATCH_UP_HOURS)),
                         ("rerun", first_at + dt.timedelta(hours=CATCH_UP_HOURS))):
            began = time.perf_counter()
            result = metering.tick(at)
            timings[name] = {"seconds": time.perf_counter() - began, "records": result.records,
                             "subjects": result.subjects}
        totals = {"instances": Instance.select().count(),
                  "usage_records": UsageRecord.select().count(),
                  "usage_daily": UsageDaily.select().count(),
                  "ledger_entries": LedgerEntry.select().count()}
    Path(result_path).write_text(json.dumps({"seed_s": seconds, "ticks": timings, **totals}))


def measure_metering(work: Path) -> dict[str, Any]:
    """The metering tick's metrics (`metering_*`); see the module docstring."""
    data_dir = Path(tempfile.mkdtemp(prefix="metering-", dir=work)) / "data"
    found = _child("metering_in_child", str(data_dir))
    ticks = found["ticks"]
    expected = {"first": METERING_INSTANCES, "catch_up": CATCH_UP_HOURS * METERING_INSTANCES,
                "rerun": 0}
    metrics = {"metering_instances": found["instances"], "metering_seed_s": found["seed_s"],
               "metering_usage_records": found["usage_records"],
               "metering_ledger_entries": found["ledger_entries"]}
    for name, want in expected.items():
        metrics[f"metering_{name}_s"] = ticks[name]["seconds"]
        metrics[f"metering_{name}_records"] = ticks[name]["records"]
        metrics[f"metering_{name}_expected"] = want
    for name in expected:
        print(f"  tick {name:8} {ticks[name]['records']:6d} records in "
              f"{ticks[name]['seconds']:.3f} s", flush=True)
    return metrics


# --- the usage chart over ten million records --------------------------------------------


def _daily_rows(groups: dict[tuple[str, str], int], sku: str, first: dt.datetime,
                last: dt.datetime) -> list[tuple]:
    """usage_daily rows for `groups` ((user, project): instances) metered every hour from
    `first` to `last` inclusive, as the tick's rollup adds them up."""
    hours_per_day: dict[str, int] = {}
    hour = first
    while hour <= last:
        day = hour.date().isoformat()
        hours_per_day[day] = hours_per_day.get(day, 0) + 1
        hour += dt.timedelta(hours=1)
    return [(user_id, project_id, day, "instance", sku, count * hours,
             count * hours * CHART_PRICE)
            for (user_id, project_id), count in groups.items()
            for day, hours in hours_per_day.items()]


def _month_amount(first: dt.datetime, last: dt.datetime) -> int:
    month_start = last.replace(day=1, hour=0)
    hours = int((last - max(first, month_start)).total_seconds() // 3600) + 1
    return hours * CHART_PRICE


def _bulk_usage(db_path: str, subjects: list[tuple[str, str, str]], sku: str, *,
                first: dt.datetime, last: dt.datetime, groups: dict[tuple[str, str], int],
                ) -> dict[str, float]:
    """Write the records, rollup and meters straight into SQLite; return the timings."""
    from appliance.services.billing import metering

    conn = sqlite3.connect(db_path, isolation_level=None)
    timings: dict[str, float] = {}
    try:
        # Setup, not what is measured: no fsync, a rollback journal instead of a WAL the
        # size of the table, and a cache that holds the indexes.
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
        conn.execute("PRAGMA temp_store=MEMORY")
        began = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TEMP TABLE bench_subject (user_id TEXT, project_id TEXT, "
                     "subject_id TEXT)")
        conn.executemany("INSERT INTO bench_subject VALUES (?, ?, ?)",
                         [(user, project, subject) for subject, user, project in subjects])
        hours = int((last - first).total_seconds() // 3600) + 1
        start = first.strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(
            f"INSERT INTO usage_record ({', '.join(USAGE_COLUMNS)}) "  # noqa: S608
            "WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < ?) "
            "SELECT s.user_id, s.project_id, s.subject_id, 'instance', ?, "
            "datetime(?, '+' || h.n || ' hours'), 1, ?, ?, "
            "datetime(?, '+' || h.n || ' hours', '+10 minutes') "
            # Subject by subject in id order: the unique index is only appended to and
            # the others take each subject's hours in a row. Measured here (2M rows): 2.5x
            # faster than hour by hour, 1.6x faster than building the indexes afterwards.
            "FROM (SELECT * FROM bench_subject ORDER BY subject_id) s CROSS JOIN h",
            (hours - 1, sku, start, CHART_PRICE, CHART_PRICE, start))
        timings["records_s"] = time.perf_counter() - began
        began = time.perf_counter()
        conn.executemany(
            "INSERT INTO usage_daily (user_id, project_id, day, resource, sku, quantity, "
            "amount) VALUES (?, ?, ?, ?, ?, ?, ?)", _daily_rows(groups, sku, first, last))
        month_amount = _month_amount(first, last)
        conn.executemany(
            "INSERT INTO usage_meter (subject_id, resource, last_hour, sku, month, "
            "month_amount, closed) VALUES (?, 'instance', ?, ?, ?, ?, 0)",
            [(subject, last.strftime("%Y-%m-%d %H:%M:%S"), sku, metering.month_of(last),
              month_amount) for subject, _, _ in subjects])
        conn.execute("COMMIT")
        timings["rollup_s"] = time.perf_counter() - began
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return timings


def chart_in_child(data_dir: str, result_path: str) -> None:
    """Seed the chart's database (see the module docstring) and check it."""
    from appliance import create_app
    from appliance.db import database
    from appliance.models import Project, UsageRecord
    from appliance.services import clock, projects
    from appliance.services.accounts import api_keys, users
    from appliance.services.accounts.sessions import Principal
    from appliance.services.billing import metering

    began = time.perf_counter()
    app = create_app({"DATA_DIR": data_dir})
    now = clock.now()
    last = metering.hour_of(now)
    first = last - dt.timedelta(hours=CHART_HOURS - 1)
    with app.app_context(), database.connection_context():
        user = users.create_user("chart@bench.example.com", secrets.token_urlsafe(18),
                                    verified=True)
        owner = Principal(user, None, "session")
        key = api_keys.create_key(owner, "bench chart", ["usage:read"],
                                  rate_limit_rpm=bench.BENCH_KEY_RPM)
        own = [Project.get(Project.created_by == user.id, Project.is_default).id]
        own += [projects.create_project(owner, f"Chart {n}").project.id
                for n in range(1, CHART_PROJECTS)]
        others = _accounts(CHART_USERS - 1, "charted")
        owners = [(user.id, own[n // 10 % len(own)]) if n % 10 == 0
                  else others[n % len(others)] for n in range(CHART_INSTANCES)]
        plan = _plan("bench-chart", CHART_PRICE, CHART_PRICE * 744)
        subjects = _instances(owners, plan, first + dt.timedelta(minutes=5))
    database.obj.close_all()  # the pool's connections, so the journal mode can change
    groups: dict[tuple[str, str], int] = {}
    for pair in owners:
        groups[pair] = groups.get(pair, 0) + 1
    models_s = time.perf_counter() - began
    timings = _bulk_usage(str(Path(data_dir) / "appliance.db"), subjects, plan.slug,
                          first=first, last=last, groups=groups)
    with app.app_context(), database.connection_context():
        records = UsageRecord.select().count()
        sums = database.execute_sql(
            "SELECT (SELECT SUM(quantity) FROM usage_record), (SELECT SUM(amount) FROM "
            "usage_record), (SELECT SUM(quantity) FROM usage_daily), (SELECT SUM(amount) "
            "FROM usage_daily)").fetchone()
        rerun = metering.tick(now).records
    Path(result_path).write_text(json.dumps({
        "secret": key.secret, "records": records, "consistent": sums[:2] == sums[2:],
        "sums": list(sums), "tick_records_after": rerun, "models_s": models_s, **timings,
        "seed_s": time.perf_counter() - began}))


def chart_wrk(port: int, secret: str, work: Path, *, connections: int, seconds: int,
              round_no: int) -> bench.WrkResult:
    """One wrk run on the chart with `connections` connections."""
    script = work / "non200.lua"
    script.write_text(bench.NON_200_LUA)
    argv = [bench.wrk_bin(), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-H", f"X-API-Key: {secret}", "-s", str(script),
            f"http://{bench.HOST}:{port}{CHART_PATH}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    if done.returncode != 0:
        raise bench.BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    result = bench.parse_wrk(done.stdout, "appliance", f"chart_c{connections}", round_no)
    print(f"  round {round_no} chart, {connections} conn(s) {result.requests_per_s:8.1f} "
          f"req/s  p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    return result


def measure_chart(work: Path, warmup: int = 2, rounds: int = CHART_ROUNDS,
                  seconds: int = CHART_SECONDS) -> tuple[dict[str, Any], list[Any]]:
    """The chart's metrics (`chart_*`) and its wrk runs; see the module docstring."""
    run_dir = Path(tempfile.mkdtemp(prefix="chart-", dir=work))
    data_dir = run_dir / "data"
    seeded = _child("chart_in_child", str(data_dir))
    print(f"  seeded {seeded['records']:,} usage records in {seeded['seed_s']:.1f} s "
          f"(models {seeded['models_s']:.1f} s, records {seeded['records_s']:.1f} s, "
          f"rollup {seeded['rollup_s']:.1f} s); "
          f"rollup consistent: {seeded['consistent']}, a tick then adds "
          f"{seeded['tick_records_after']}", flush=True)
    port = bench.free_port()
    argv = [bench.appliance_bin(), "serve", "--host", bench.HOST, "--port", str(port),
            "--threads", str(bench.THREADS), "--data-dir", str(data_dir)]
    results = []
    with bench.running(bench.Server("chart", argv, port, run_dir / "server.log", data_dir,
                                    settings=bench.LOADED_SETTINGS)) as server:
        bench.wait_healthy(server)
        status, body = bench.call_json(port, "GET", CHART_PATH, api_key=seeded["secret"])
        points = body.get("data") if isinstance(body, dict) else None
        if status != 200 or not isinstance(points, list) or len(points) != 90:
            raise bench.BenchError(f"GET {CHART_PATH} answered {status}: {str(body)[:300]}\n"
                                   f"{server.log_tail()}")
        if warmup > 0:
            chart_wrk(port, seeded["secret"], work, connections=1, seconds=warmup,
                      round_no=0)
        for round_no in range(1, rounds + 1):
            results.append(chart_wrk(port, seeded["secret"], work, connections=1,
                                     seconds=seconds, round_no=round_no))
        results.append(chart_wrk(port, seeded["secret"], work,
                                 connections=bench.CONNECTIONS, seconds=seconds,
                                 round_no=rounds + 1))
    sequential = [r for r in results if r.endpoint == "chart_c1"]
    loaded = results[-1]
    metrics = {
        "chart_records": seeded["records"], "chart_seed_s": seeded["seed_s"],
        "chart_seed_records_s": seeded["records_s"],
        "chart_rollup_consistent": seeded["consistent"],
        "chart_tick_records_after_seed": seeded["tick_records_after"],
        "chart_p50_ms": statistics.median(r.p50_ms for r in sequential),
        "chart_p99_ms": statistics.median(r.p99_ms for r in sequential),
        "chart_requests_per_s": statistics.median(r.requests_per_s for r in sequential),
        "chart_loaded_requests_per_s": loaded.requests_per_s,
        "chart_loaded_p99_ms": loaded.p99_ms,
        "chart_errors": sum(r.non_2xx + r.non_200 + r.socket_errors for r in results),
        "chart_points": len(points),
    }
    return metrics, results


# --- rows --------------------------------------------------------------------------------


def rows(m: dict[str, Any]) -> list[Any]:
    """Table rows for whatever of the billing benchmarks ran."""
    row = bench.Row
    out = []
    if "billing_insert_rows_per_s" in m:
        out.append(row("baseline: SQLite batched insert (WAL, FULL)",
                       f"{m['billing_insert_rows_per_s']:,.0f} rows/s", "-", None))
    if "metering_first_s" in m:
        out.append(row("metering: instances seeded",
                       f"{m['metering_instances']:,}", "-", None))
        for name, label, hours in (("first", "first hour", 1),
                                   ("catch_up", f"catch-up of {CATCH_UP_HOURS} h",
                                    CATCH_UP_HOURS)):
            right = m[f"metering_{name}_records"] == m[f"metering_{name}_expected"]
            seconds = m[f"metering_{name}_s"]
            out.append(row(f"metering tick, {label}",
                           f"{seconds:.3f} s, {m[f'metering_{name}_records']:,} records",
                           f"< {TARGET_TICK_S:g} s" + (" per hour" if hours > 1 else ""),
                           right and seconds / hours < TARGET_TICK_S))
        out.append(row("metering tick, re-run (nothing to add)",
                       f"{m['metering_rerun_s']:.3f} s, {m['metering_rerun_records']} records",
                       "0 records", m["metering_rerun_records"] == 0))
    if "chart_p99_ms" in m:
        sane = (m["chart_rollup_consistent"] and m["chart_tick_records_after_seed"] == 0
                and m["chart_errors"] == 0)
        out.append(row("chart: usage records seeded",
                       f"{m['chart_records']:,} in {m['chart_seed_s']:.1f} s",
                       f"(aim < {TARGET_SEED_S:g} s)", None))  # set-up, not the appliance
        out.append(row("chart: rollup = records, tick adds 0",
                       f"{m['chart_rollup_consistent']}, "
                       f"{m['chart_tick_records_after_seed']}", "True, 0",
                       m["chart_rollup_consistent"]
                       and m["chart_tick_records_after_seed"] == 0))
        out.append(row("GET /usage/chart?days=90 p50 / p99, 1 conn",
                       f"{m['chart_p50_ms']:.2f} / {m['chart_p99_ms']:.2f} ms",
                       f"p99 < {TARGET_CHART_P99_MS:g} ms",
                       sane and m["chart_p99_ms"] < TARGET_CHART_P99_MS))
        out.append(row(f"GET /usage/chart req/s, 1 / {bench.CONNECTIONS} conns",
                       f"{m['chart_requests_per_s']:.1f} / "
                       f"{m['chart_loaded_requests_per_s']:.1f} (p99 "
                       f"{m['chart_loaded_p99_ms']:.1f} ms)", "-", None))
        out.append(row("GET /usage/chart errors", f"{m['chart_errors']}", "0",
                       m["chart_errors"] == 0))
    return out


TARGETS = {"metering_tick_s_max": TARGET_TICK_S, "chart_p99_ms_max": TARGET_CHART_P99_MS}
