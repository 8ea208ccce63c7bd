"""A real `appliance serve` killed with SIGKILL at random points of a burst of creating
POSTs with Idempotency-Keys, restarted, and the same requests retried: no resource is
created twice and no key is left "in flight" (a record is written in its resource's
transaction, so a crash leaves both or neither)."""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor

import requests

from appliance import create_app
from tests.conftest import Server
from tests.factories import bearer, login, make_user

PROJECTS = 24
CREDITS = 8
THREADS = 8
KILLED_ROUNDS = 3


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir),
                     "APPLIANCE_RATE_LIMIT_USER_PER_MINUTE": "100000"})
    server.wait()
    return server


def _rows(db_path, sql, *args):
    with sqlite3.connect(db_path, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def _requests(owner_auth, admin_auth, owner_id):
    made = [("/api/v1/projects", owner_auth, f"project-{n}", {"name": f"burst {n}"})
            for n in range(PROJECTS)]
    made += [("/api/v1/admin/billing/credits", admin_auth, f"credit-{n}",
              {"user_id": owner_id, "amount": 100 + n, "note": f"burst credit {n}"})
             for n in range(CREDITS)]
    return made


def _send(url, request):
    path, auth, key, body = request
    return requests.post(url + path, headers={**auth, "Idempotency-Key": key}, json=body,
                         timeout=30)


def _burst_then_kill(server: Server, made: list, rng: random.Random) -> None:
    """Send every request from THREADS threads and SIGKILL the server after a random
    number of answers, while the others are still running."""
    kill_after = rng.randint(1, len(made) - THREADS)
    answered: queue.Queue[int] = queue.Queue()
    order = made[:]
    rng.shuffle(order)

    def send(request):
        try:
            answered.put(_send(server.url, request).status_code)
        except requests.RequestException:
            answered.put(0)

    with ThreadPoolExecutor(THREADS) as pool:
        for request in order:
            pool.submit(send, request)
        for _ in range(kill_after):
            answered.get(timeout=60)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    server.process.communicate()


def test_a_kill_during_idempotent_creates_leaves_no_duplicate_and_no_key_in_flight(tmp_path):
    rng = random.Random(os.environ.get("CRASH_SEED") or None)  # noqa: S311 - not secrets
    data_dir = tmp_path / "data"
    app = create_app({"DATA_DIR": str(data_dir)})
    owner = make_user(app, "owner@example.test")
    make_user(app, "root@example.test", role="admin")
    client = app.test_client()
    made = _requests(bearer(login(client, "owner@example.test")),
                     bearer(login(client, "root@example.test")), owner.id)
    db_path = data_dir / "appliance.db"

    for _ in range(KILLED_ROUNDS):
        _burst_then_kill(_serve(data_dir), made, rng)

    server = _serve(data_dir)
    try:
        answers = {request[2]: _send(server.url, request) for request in made}
    finally:
        server.stop()

    statuses = {key: response.status_code for key, response in answers.items()}
    assert set(statuses.values()) == {201}, statuses
    for n in range(PROJECTS):
        rows = _rows(db_path, "SELECT id FROM project WHERE name = ?", f"burst {n}")
        assert len(rows) == 1, f"burst {n}: {len(rows)} projects"
        assert answers[f"project-{n}"].json()["id"] == rows[0][0]
    for n in range(CREDITS):
        rows = _rows(db_path, "SELECT id FROM ledger_entry WHERE note = ?", f"burst credit {n}")
        assert len(rows) == 1, f"burst credit {n}: credited {len(rows)} times"
    assert _rows(db_path, "SELECT COUNT(*) FROM idempotency_record "
                          "WHERE state = 'in_flight'") == [(0,)]
