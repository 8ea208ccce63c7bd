"""Billing benchmarks for scripts/bench: the metering tick at scale (the part `metering`),
printed next to a baseline measured in the same run:

* SQLite batched-insert rate (`insert_rate`): BASELINE_ROWS usage-record-like rows (the
  columns the tick writes) inserted with one `executemany` in one transaction into a
  table without indexes, in a fresh database file with the appliance's PRAGMAs (WAL,
  synchronous=FULL); rows/s. It says how fast this machine's SQLite writes, so the tick
  below and the chart can be read against it (REFERENCE.md measured about 250k rows/s here).

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

The usage chart over ten million records (the part `chart`) is in
benchmarks/billing_chart.py; both seed their databases with the helpers here, in a child
interpreter (`run_in_child`).
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import PLAN, SCRIPTS_DIR, BenchError, Row, insert_all, server_env

BASELINE_ROWS = 200_000
METERING_INSTANCES = 10_000
METERING_USERS = 1_000
CATCH_UP_HOURS = 4
TARGET_TICK_S = 2.0

CHILD_TIMEOUT_S = 600

# Run by `run_in_child` as
# `python -c CHILD_CODE <scripts dir> <module> <function> <arguments...> <result file>`.
CHILD_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib; "
              "getattr(importlib.import_module(sys.argv[2]), sys.argv[3])(*sys.argv[4:])")

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


def run_in_child(function: Callable[..., None], *args: str) -> dict[str, Any]:
    """Run `function(*args, result_path)`, a function of a module of this package, in a
    child interpreter; return the JSON it wrote to `result_path`. BenchError when it fails
    or takes longer than CHILD_TIMEOUT_S."""
    name = function.__name__
    result = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".json")[1])
    argv = [sys.executable, "-c", CHILD_CODE, str(SCRIPTS_DIR), function.__module__, name,
            *args, str(result)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=server_env(),
                              timeout=CHILD_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name} took more than {CHILD_TIMEOUT_S} s") from None
    try:
        if done.returncode != 0 or not result.read_text():
            raise BenchError(f"{name} failed with status {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
        return json.loads(result.read_text())
    finally:
        result.unlink(missing_ok=True)


def insert_accounts(count: int, label: str) -> list[tuple[str, str]]:
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
            insert_all(model, rows)
    return pairs


def create_plan(slug: str, price: int, cap: int) -> Any:
    from appliance.models import Plan
    from appliance.services import clock
    from appliance.services.ids import new_id

    now = clock.now()
    return Plan.create(id=new_id("pln"), slug=slug, name=slug, price_hourly=price,
                       price_monthly_cap=cap, created_at=now, updated_at=now, **PLAN)


def insert_instances(owners: list[tuple[str, str]], plan: Any, created: dt.datetime,
               ) -> list[tuple[str, str, str]]:
    """Bulk-insert one running instance per (user id, project id) in `owners` on a
    disabled simulated node (see seed.seed_instances); return (instance, user, project)."""
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
        insert_all(Instance, rows)
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
        accounts = insert_accounts(METERING_USERS, "metered")
        plan = create_plan("bench-metered", 3, 3 * 744)
        owners = [accounts[n % len(accounts)] for n in range(METERING_INSTANCES)]
        insert_instances(owners, plan, hour + dt.timedelta(minutes=5))
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
    found = run_in_child(metering_in_child, str(data_dir))
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

# --- rows --------------------------------------------------------------------------------


def rows(m: dict[str, Any]) -> list[Any]:
    """Table rows of the SQLite baseline and the metering tick, for whichever ran."""
    row = Row
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
    return out


TARGETS = {"metering_tick_s_max": TARGET_TICK_S}
