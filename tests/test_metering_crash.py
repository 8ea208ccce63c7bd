"""A real `appliance serve` killed with SIGKILL while its metering tick runs: after a
restart the usage and the ledger are complete and nothing is counted twice."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections import defaultdict

from appliance import create_app
from appliance.db import database
from appliance.services import clock
from appliance.services.billing import ledger
from tests.conftest import Server
from tests.factories import (
    default_project_of,
    make_image,
    make_instance,
    make_node,
    make_plan,
    make_user,
)

INSTANCES = 150
HOURS_BACK = 400  # each instance has this many hours to catch up: ~60,000 records


def _prepare(data_dir) -> tuple[str, dt.datetime]:
    app = create_app({"DATA_DIR": str(data_dir)})
    user = make_user(app, "owner@example.test")
    created = clock.now() - dt.timedelta(hours=HOURS_BACK)
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        plan = make_plan(price=3, cap=10**6)
        project = default_project_of(user.id)
        with database.atomic():
            for n in range(INSTANCES):
                make_instance(project, plan, node, image, created_at=created, name=f"i{n}")
        ledger.post(user.id, "grant", 10**7, "grant:start")
    return user.id, created


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir),
                     "APPLIANCE_METERING_INTERVAL_SECONDS": "1"})
    server.wait()
    return server


def _count(db_path) -> int:
    with sqlite3.connect(db_path, timeout=30) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage_record").fetchone()[0]


def test_a_kill_during_a_tick_loses_nothing_and_counts_nothing_twice(tmp_path):
    data_dir = tmp_path / "data"
    user_id, created = _prepare(data_dir)
    db_path = data_dir / "appliance.db"
    expected_at_least = INSTANCES * (HOURS_BACK + 1)
    rng = secrets.SystemRandom()
    for _ in range(3):
        server = _serve(data_dir)
        time.sleep(rng.uniform(0.8, 3.0))  # the first tick starts about 1 s after start-up
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    server = _serve(data_dir)
    try:
        deadline = time.monotonic() + 90
        while _count(db_path) < expected_at_least:
            assert time.monotonic() < deadline, "the restarted appliance did not catch up"
            time.sleep(0.5)
        time.sleep(1.5)  # one more tick: it must add nothing for hours already there
    finally:
        server.stop()

    with sqlite3.connect(db_path) as conn:
        hours = defaultdict(list)
        for subject, hour in conn.execute("SELECT subject_id, hour FROM usage_record"):
            hours[subject].append(dt.datetime.fromisoformat(hour))
        assert len(hours) == INSTANCES
        first = created.replace(minute=0, second=0, microsecond=0, tzinfo=None)
        for seen in hours.values():
            assert len(seen) == len(set(seen))  # never an hour twice
            seen.sort()
            assert seen[0] == first
            assert seen == [first + dt.timedelta(hours=n) for n in range(len(seen))]
            assert len(seen) >= HOURS_BACK + 1
        entries = conn.execute("SELECT amount, balance_after, type, reference FROM ledger_entry "
                               "WHERE user_id = ? ORDER BY id", (user_id,)).fetchall()
        running = 0
        for amount, balance_after, _, _ in entries:
            running += amount
            assert balance_after == running
        usage = [e for e in entries if e[2] == "usage"]
        records = sum(len(seen) for seen in hours.values())
        assert len(usage) == records == len({e[3] for e in usage})
        charged = conn.execute("SELECT SUM(amount) FROM usage_record").fetchone()[0]
        assert running == 10**7 - charged
        assert conn.execute("SELECT SUM(amount) FROM usage_daily").fetchone()[0] == charged
