"""A real `appliance serve` killed with SIGKILL while it issues last month's invoices:
after a restart every account has exactly one invoice, numbered 1..N without a gap or a
duplicate, each with its lines and its event."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import sqlite3
import sys
import time

import pytest

from appliance import create_app
from appliance.db import database
from appliance.services import clock
from appliance.services.accounts import passwords
from appliance.services.billing import invoices, metering
from tests.conftest import Server
from tests.factories import (
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_plan,
    make_user,
)

ACCOUNTS = 400

pytestmark = pytest.mark.slow


def _rows(db_path, sql, *args):
    with sqlite3.connect(db_path, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def _count(db_path) -> int:
    return _rows(db_path, "SELECT COUNT(*) FROM invoice")[0][0]


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir)})
    server.wait()
    return server


def _accounts_with_usage_last_month(app, monkeypatch) -> list[str]:
    """ACCOUNTS accounts, each with an instance that ran in six hours of last month."""
    hashed = passwords.hash_password("correct horse battery staple")
    monkeypatch.setattr(passwords, "hash_password", lambda password: hashed)  # set-up speed
    last_month = invoices.previous_month(invoices.month_start(clock.now()))
    users = []
    for n in range(ACCOUNTS):
        clock.freeze(last_month + dt.timedelta(minutes=n))  # account order = number order
        users.append(make_user(app, f"user{n}@example.test"))
    clock.reset()
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        plan = make_plan(price=25)
        started = last_month + dt.timedelta(days=3, minutes=30)
        for user in users:
            instance = make_instance(default_project_of(user.id), plan, node, image,
                                     created_at=started)
            delete_instance(instance, started + dt.timedelta(hours=5))
        assert metering.tick().records == 6 * ACCOUNTS  # 00:30 to 05:30: 6 started hours
    return [user.id for user in users]


def test_a_kill_while_invoices_are_issued_leaves_one_gap_free_invoice_each(tmp_path,
                                                                           monkeypatch):
    data_dir = tmp_path / "data"
    app = create_app({"DATA_DIR": str(data_dir)})
    user_ids = _accounts_with_usage_last_month(app, monkeypatch)
    db_path = data_dir / "appliance.db"
    year = clock.now().year

    server = _serve(data_dir)  # issue_invoices runs at start-up
    try:
        deadline = time.monotonic() + 60
        while _count(db_path) == 0:
            assert time.monotonic() < deadline, "the appliance issued no invoice"
            time.sleep(0.005)
        # about 150 invoices a second here: somewhere in the first few hundred
        time.sleep(random.SystemRandom().uniform(0, 0.5))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    finally:
        if server.process.poll() is None:
            server.stop()
    at_kill = _count(db_path)
    assert 0 < at_kill < ACCOUNTS, "the kill did not land while invoices were being issued"
    # What committed is whole: the counter, each invoice's lines and its event.
    assert _rows(db_path, "SELECT last_number FROM invoice_counter") == [(at_kill,)]
    assert _rows(db_path, "SELECT COUNT(*) FROM invoice i WHERE NOT EXISTS "
                          "(SELECT 1 FROM invoice_line l WHERE l.invoice_id = i.id)") == [(0,)]
    assert _rows(db_path, "SELECT COUNT(*) FROM invoice_run") == [(0,)]

    server = _serve(data_dir)
    try:
        deadline = time.monotonic() + 60
        while not _rows(db_path, "SELECT 1 FROM invoice_run"):
            assert time.monotonic() < deadline, "the restarted appliance did not finish"
            time.sleep(0.05)
    finally:
        server.stop()

    issued = _rows(db_path, "SELECT user_id, number, sequence, total FROM invoice "
                            "ORDER BY sequence")
    assert sorted(row[0] for row in issued) == sorted(user_ids)  # one each, no more
    assert [row[2] for row in issued] == list(range(1, ACCOUNTS + 1))
    assert [row[1] for row in issued] == [f"{year}-{n:06d}" for n in range(1, ACCOUNTS + 1)]
    assert [row[0] for row in issued] == user_ids  # oldest account first, across the kill
    assert {row[3] for row in issued} == {150}  # 6 hours at 25
    assert _rows(db_path, "SELECT last_number FROM invoice_counter") == [(ACCOUNTS,)]
    assert _rows(db_path, "SELECT invoices FROM invoice_run") == [(ACCOUNTS,)]
    lines = _rows(db_path, "SELECT COUNT(*), SUM(hours), SUM(amount) FROM invoice_line")
    assert lines == [(ACCOUNTS, 6 * ACCOUNTS, 150 * ACCOUNTS)]
    events = _rows(db_path, "SELECT COUNT(*) FROM event WHERE type = 'invoice.issued'")
    assert events == [(ACCOUNTS,)]
