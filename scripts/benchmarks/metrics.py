"""Resource metrics for scripts/bench (the part `metrics`):

* The sampling tick (`services.metrics.sampling.tick`) for TICK_INSTANCES (500) running
  instances on the simulated engine, in a child interpreter: the instances are created
  on the fake engine and as rows, one tick sets the counters, then TICK_ROUNDS ticks are
  timed (the median and the slowest against TARGET_TICK_S, 5 s).
* The same tick on Incus for every instance it runs, where Incus answers: INCUS_MADE
  containers of the test image are made for it (and removed), the tick is timed and put
  next to one `GET /1.0/instances?recursion=2` of the same engine measured in the same run
  (the one engine round trip the tick makes per node).
* GET /api/v1/projects/{p}/instances/{i}/metrics?window=7d with 30 days of samples of
  SERIES_INSTANCES (500) instances: the rollup rows the tick would have written (minute
  rows for the last day, 5-minute rows for the last week, hourly rows for 30 days) are
  inserted straight into SQLite, then `appliance serve` runs on that directory and wrk
  loads the endpoint with an API key, one connection, for SERIES_ROUNDS rounds: the
  median p99 against TARGET_SERIES_P99_MS (50 ms). The database's size is shown too.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.billing import create_plan, insert_accounts, insert_instances, run_in_child
from benchmarks.common import (
    BENCH_KEY_RPM,
    HOST,
    LOADED_SETTINGS,
    TEST_IMAGE,
    THREADS,
    BenchError,
    Row,
    Server,
    appliance_bin,
    call_json,
    free_port,
    running,
    wait_healthy,
)
from benchmarks.wrk import NON_200_LUA, parse_wrk, wrk_bin

TICK_INSTANCES = 500
TICK_ROUNDS = 5
TARGET_TICK_S = 5.0
INCUS_MADE = 10
SERIES_INSTANCES = 500
SERIES_DAYS = 30
SERIES_ROUNDS = 3
SERIES_SECONDS = 5
TARGET_SERIES_P99_MS = 50.0


def tick_in_child(data_dir: str, result_path: str) -> None:
    """Time the tick for TICK_INSTANCES instances on the fake engine."""
    from appliance import create_app, drivers
    from appliance.db import database
    from appliance.drivers.base import InstanceSpec, Limits
    from appliance.models import Instance, Node
    from appliance.services.metrics import sampling

    app = create_app({"DATA_DIR": data_dir})
    with app.app_context(), database.connection_context():
        owners = insert_accounts(10, "ticked")
        plan = create_plan("bench-metrics", 1, 100)
        from appliance.services import clock
        made = insert_instances([owners[n % 10] for n in range(TICK_INSTANCES)], plan,
                                clock.now())
        node = Node.get(Node.name == "bench-metered")
        Node.update(enabled=True).where(Node.id == node.id).execute()
        driver = drivers.connect("fake", node.endpoint)
        for instance_id, _, _ in made:
            ref = Instance.get_by_id(instance_id).driver_ref
            driver.create(InstanceSpec(ref, "fake/debian-12", Limits(1, 128, 1)))
        first = sampling.tick()
        times = []
        for _ in range(TICK_ROUNDS):
            began = time.perf_counter()
            result = sampling.tick()
            times.append(time.perf_counter() - began)
    Path(result_path).write_text(json.dumps({"first": first, "last": result,
                                             "times": times}))


def incus_tick_in_child(data_dir: str, result_path: str) -> None:
    """Time the tick on Incus for every instance it runs (INCUS_MADE of them made here)."""
    from appliance import create_app, drivers
    from appliance.db import database
    from appliance.models import Image, Instance
    from appliance.services import clock
    from appliance.services.ids import new_id
    from appliance.services.instances import nodes
    from appliance.services.metrics import sampling

    driver = drivers.connect("incus", "")
    try:
        driver.info()
    except Exception as exc:  # whatever the client raises: the engine is not here
        Path(result_path).write_text(json.dumps({"skipped": f"Incus does not answer: {exc}"}))
        return
    app = create_app({"DATA_DIR": data_dir})
    refs = [f"bench-mtx-{n:02d}-{secrets.token_hex(3)}" for n in range(INCUS_MADE)]
    from appliance.drivers.base import InstanceSpec, Limits
    try:
        for ref in refs:
            driver.create(InstanceSpec(ref, TEST_IMAGE, Limits(1, 128, 1)))
        with app.app_context(), database.connection_context():
            owners = insert_accounts(1, "incused")
            plan = create_plan("bench-incus", 1, 100)
            node = nodes.check_health(nodes._insert(
                "bench-incus", "incus", "", options={}, enabled=True,
                capacity=nodes.Capacity(64, 65536, 1000)))
            image = Image.get(Image.node == node.id, Image.ref == TEST_IMAGE)
            listed = driver._call("GET", "/1.0/instances", params={"recursion": 1}) or []
            running = [i["name"] for i in listed if i.get("status") == "Running"]
            now = clock.now()
            for ref in running:  # every instance it runs, the others' too
                Instance.create(id=new_id("ins"), project=owners[0][1], name=ref,
                                plan=plan.id, image=image.id, node=node.id, driver_ref=ref,
                                status="running", power_state="running",
                                created_at=now, updated_at=now)
            sampling.tick()
            ticks, lists = [], []
            for _ in range(TICK_ROUNDS):
                began = time.perf_counter()
                result = sampling.tick()
                ticks.append(time.perf_counter() - began)
                began = time.perf_counter()
                driver._call("GET", "/1.0/instances", params={"recursion": 2})
                lists.append(time.perf_counter() - began)
    finally:
        for ref in refs:
            driver.delete(ref)
    Path(result_path).write_text(json.dumps({"instances": result["instances"],
                                             "ticks": ticks, "lists": lists}))


def series_in_child(data_dir: str, result_path: str) -> None:
    """SERIES_DAYS of rollup rows for SERIES_INSTANCES instances and a key to read them."""
    from appliance import create_app
    from appliance.db import database
    from appliance.models import Project
    from appliance.services import clock
    from appliance.services.accounts import api_keys, users
    from appliance.services.principal import Principal

    began = time.perf_counter()
    app = create_app({"DATA_DIR": data_dir})
    with app.app_context(), database.connection_context():
        user = users.create_user("metrics@bench.example.com", secrets.token_urlsafe(18),
                                 verified=True)
        key = api_keys.create_key(Principal(user, None, "session"), "bench metrics",
                                  ["instances:read"], rate_limit_rpm=BENCH_KEY_RPM)
        project = Project.get(Project.created_by == user.id, Project.is_default).id
        plan = create_plan("bench-series", 1, 100)
        made = insert_instances([(user.id, project)] * SERIES_INSTANCES, plan, clock.now())
    database.obj.close_all()
    now = int(clock.now().timestamp())
    conn = sqlite3.connect(str(Path(data_dir) / "appliance.db"), isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN IMMEDIATE")
    keep = {60: 86400, 300: 7 * 86400, 3600: SERIES_DAYS * 86400}
    rows = 0
    for instance_id, _, _ in made:
        params = []
        for step, span in keep.items():
            last = now - now % step
            for at in range(last - span + step, last + step, step):
                params.append((instance_id, step, at, step // 60, step // 60,
                               2000 + at % 3000, 300 * 2**20 + at % 7777, 5000, 2000,
                               2 * 2**30))
        conn.executemany(
            'INSERT INTO "instance_metric" ("instance_id", "step", "at", "n", "nr", "cpu", '
            '"memory", "rx", "tx", "disk") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)', params)
        rows += len(params)
    conn.execute("COMMIT")
    conn.close()
    size = (Path(data_dir) / "appliance.db").stat().st_size
    Path(result_path).write_text(json.dumps({
        "secret": key.secret, "path": f"/api/v1/projects/{project}/instances/"
                                      f"{made[len(made) // 2][0]}/metrics?window=7d",
        "rows": rows, "db_bytes": size, "seed_s": time.perf_counter() - began}))


def _wrk(port: int, secret: str, path: str, work: Path, *, seconds: int, round_no: int):
    script = work / "non200.lua"
    script.write_text(NON_200_LUA)
    argv = [wrk_bin(), "-t1", "-c1", f"-d{seconds}s", "--latency", "-H",
            f"X-API-Key: {secret}", "-s", str(script), f"http://{HOST}:{port}{path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    result = parse_wrk(done.stdout, "appliance", "metrics_7d", round_no)
    print(f"  round {round_no} metrics?window=7d {result.requests_per_s:8.1f} req/s  "
          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    return result


def measure(work: Path, warmup: int = 2) -> dict[str, Any]:
    """Every number of the part; see the module docstring."""
    run_dir = Path(tempfile.mkdtemp(prefix="metrics-", dir=work))
    ticked = run_in_child(tick_in_child, str(run_dir / "tick"))
    print(f"  tick, {ticked['last']['instances']} fake instances: median "
          f"{statistics.median(ticked['times']):.3f} s, slowest {max(ticked['times']):.3f} s",
          flush=True)
    metrics: dict[str, Any] = {
        "metrics_tick_instances": ticked["last"]["instances"],
        "metrics_tick_s": statistics.median(ticked["times"]),
        "metrics_tick_max_s": max(ticked["times"])}
    incus = run_in_child(incus_tick_in_child, str(run_dir / "incus"))
    if "skipped" in incus:
        print(f"  Incus tick skipped: {incus['skipped']}", flush=True)
    else:
        metrics |= {"metrics_incus_instances": incus["instances"],
                    "metrics_incus_tick_s": statistics.median(incus["ticks"]),
                    "metrics_incus_list_s": statistics.median(incus["lists"])}
        print(f"  tick on Incus, {incus['instances']} instances: "
              f"{metrics['metrics_incus_tick_s']:.3f} s (its instance list with state: "
              f"{metrics['metrics_incus_list_s']:.3f} s)", flush=True)

    seeded = run_in_child(series_in_child, str(run_dir / "series"))
    print(f"  seeded {seeded['rows']:,} metric rows ({SERIES_INSTANCES} instances, "
          f"{SERIES_DAYS} days) in {seeded['seed_s']:.1f} s; database "
          f"{seeded['db_bytes'] / 2**20:.0f} MiB", flush=True)
    port = free_port()
    argv = [appliance_bin(), "serve", "--host", HOST, "--port", str(port),
            "--threads", str(THREADS), "--data-dir", str(run_dir / "series")]
    results = []
    with running(Server("metrics", argv, port, run_dir / "server.log",
                        run_dir / "series", settings=LOADED_SETTINGS)) as server:
        wait_healthy(server)
        status, body = call_json(port, "GET", seeded["path"], api_key=seeded["secret"])
        times = body.get("times") if isinstance(body, dict) else None
        if status != 200 or not times or len(times) != 168:
            raise BenchError(f"GET {seeded['path']} answered {status}: {str(body)[:300]}\n"
                             f"{server.log_tail()}")
        if warmup > 0:
            _wrk(port, seeded["secret"], seeded["path"], run_dir, seconds=warmup,
                 round_no=0)
        for round_no in range(1, SERIES_ROUNDS + 1):
            results.append(_wrk(port, seeded["secret"], seeded["path"], run_dir,
                                seconds=SERIES_SECONDS, round_no=round_no))
    metrics |= {
        "metrics_rows": seeded["rows"], "metrics_db_mib": seeded["db_bytes"] / 2**20,
        "metrics_7d_p50_ms": statistics.median(r.p50_ms for r in results),
        "metrics_7d_p99_ms": statistics.median(r.p99_ms for r in results),
        "metrics_7d_errors": sum(r.non_2xx + r.non_200 + r.socket_errors for r in results)}
    return metrics


def rows(m: dict[str, Any]) -> list[Row]:
    out = []
    if "metrics_tick_s" in m:
        out.append(Row(f"metrics tick, {m['metrics_tick_instances']} fake instances "
                       "(median / slowest)",
                       f"{m['metrics_tick_s']:.3f} / {m['metrics_tick_max_s']:.3f} s",
                       f"< {TARGET_TICK_S:g} s", m["metrics_tick_max_s"] < TARGET_TICK_S
                       and m["metrics_tick_instances"] == TICK_INSTANCES))
    if "metrics_incus_tick_s" in m:
        ratio = m["metrics_incus_tick_s"] / max(m["metrics_incus_list_s"], 1e-9)
        out.append(Row(f"metrics tick on Incus, {m['metrics_incus_instances']} instances",
                       f"{m['metrics_incus_tick_s']:.3f} s ({ratio:.1f}x its instance "
                       "list)", f"< {TARGET_TICK_S:g} s",
                       m["metrics_incus_tick_s"] < TARGET_TICK_S))
    if "metrics_7d_p99_ms" in m:
        out.append(Row(f"metric rows, {SERIES_INSTANCES} instances x {SERIES_DAYS} days",
                       f"{m['metrics_rows']:,} ({m['metrics_db_mib']:.0f} MiB database)",
                       "-", None))
        out.append(Row("GET .../metrics?window=7d p50 / p99, 1 conn",
                       f"{m['metrics_7d_p50_ms']:.2f} / {m['metrics_7d_p99_ms']:.2f} ms",
                       f"p99 < {TARGET_SERIES_P99_MS:g} ms",
                       m["metrics_7d_errors"] == 0
                       and m["metrics_7d_p99_ms"] < TARGET_SERIES_P99_MS))
    return out


TARGETS = {"metrics_tick_s_max": TARGET_TICK_S, "metrics_7d_p99_ms_max": TARGET_SERIES_P99_MS}
