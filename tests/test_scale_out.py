"""Several processes on one database: the scheduler's lease, jobs claimed once, live events
across processes; and on SQLite, a second `appliance serve` of one data directory refused.

The two-process tests need PostgreSQL: they run in the PostgreSQL pass of the suite
(APPLIANCE_TEST_DATABASE_URL, see tests/pgsupport.py), which `.ci/run` always makes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
import time

import psycopg2
import pytest
import requests

from appliance import create_app
from appliance.models import Node
from appliance.services import clock
from appliance.services.ops import leader
from tests import pgsupport
from tests.conftest import Server, wait_for_http
from tests.factories import api, bearer, fake_catalog, login, make_user, wait_for

pytestmark = pytest.mark.slow


def test_the_lease_has_one_holder_and_passes_on_when_it_runs_out(app):
    with app.app_context():
        assert leader.renew(30, "a") is True
        assert leader.renew(30, "b") is False  # held by a
        assert leader.renew(30, "a") is True  # renewed
        clock.freeze(clock.now() + dt.timedelta(seconds=31))
        assert leader.renew(30, "b") is True  # a stopped renewing: b takes it
        assert leader.renew(30, "a") is False
        assert leader.holder()["holder"] == "b"
        leader.release("b")  # a clean stop hands it over at once
        assert leader.renew(30, "a") is True


@pytest.mark.sqlite_only("one process per SQLite file")
def test_a_second_serve_of_the_same_sqlite_directory_is_refused(tmp_path, serve):
    data_dir = tmp_path / "data"
    first = serve(APPLIANCE_DATA_DIR=str(data_dir))
    second = Server([sys.executable, "-m", "appliance"], tmp_path,
                    {"APPLIANCE_DATA_DIR": str(data_dir)})
    try:
        output, _ = second.process.communicate(timeout=60)
    finally:
        if second.process.poll() is None:
            second.stop()
    assert second.process.returncode != 0
    assert f"another appliance serve (pid {first.process.pid})" in output
    assert "move to PostgreSQL to run several" in output
    assert "Traceback" not in output
    assert requests.get(first.url + "/api/v1/health", timeout=5).status_code == 200


# Two processes on one PostgreSQL database --------------------------------------------

postgres = pytest.mark.postgres_only("several processes share one database")


def _lease(url: str) -> tuple[str, dt.datetime] | None:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT "holder", "expires_at" FROM "scheduler_lease" '
                        "WHERE \"name\" = 'periodic'")
            row = cur.fetchone()
    finally:
        conn.close()
    return row


def _two(tmp_path, **env: str) -> tuple[Server, Server]:
    """Two `appliance serve` on the test's database (and one data directory: the
    secrets are shared, as on two machines with the same DATA_DIR copied)."""
    settings = {"APPLIANCE_DATA_DIR": str(tmp_path / "data"),
                "APPLIANCE_LEADER_LEASE_SECONDS": "3",
                "APPLIANCE_ENGINE_CHECK_INTERVAL_SECONDS": "3600", **env}
    servers = [Server([sys.executable, "-m", "appliance"], tmp_path, settings)
               for _ in range(2)]
    try:
        for server in servers:  # a loaded 2-core machine starts two slowly
            wait_for_http(server.url + "/api/v1/health", server.process, timeout=90)
    except AssertionError:
        for server in servers:
            print(server.stop())
        raise
    return servers[0], servers[1]


def _pid_of(holder: str) -> int:
    return int(holder.split(":")[1])


@postgres
def test_the_periodic_tasks_move_to_the_other_process_when_the_leader_is_killed(tmp_path):
    url = os.environ["APPLIANCE_DATABASE_URL"]
    a, b = _two(tmp_path)
    try:
        first = wait_for(lambda: _lease(url), "a lease holder", timeout=20)
        pids = {a.process.pid: a, b.process.pid: b}
        assert _pid_of(first[0]) in pids
        leader_server = pids.pop(_pid_of(first[0]))
        (other,) = pids.values()
        killed_at = time.monotonic()
        os.kill(leader_server.process.pid, signal.SIGKILL)
        leader_server.process.wait()

        def moved():
            row = _lease(url)
            return row if row and _pid_of(row[0]) == other.process.pid else None

        wait_for(moved, "the other process to take the lease", timeout=20)
        # Within the lease (3 s) and a third of it for the next renewal, plus slack for
        # a loaded machine.
        assert time.monotonic() - killed_at < 3 + 1 + 4
        assert requests.get(other.url + "/api/v1/health", timeout=5).status_code == 200
    finally:
        for server in (a, b):
            if server.process.poll() is None:
                server.stop()


def _owner_with_room(tmp_path) -> tuple[dict[str, str], dict[str, str]]:
    """An owner with limits and a fake node roomy enough for hundreds of instances: their
    bearer headers and the catalog."""
    app = create_app({"DATA_DIR": str(tmp_path / "data")})
    make_user(app, "owner@example.test")
    make_user(app, "root@example.test", role="admin")
    catalog = fake_catalog(app)
    with app.app_context():
        Node.update(capacity_vcpus=1000, capacity_memory_mb=1_000_000,
                    capacity_disk_gb=100_000).execute()
    client = app.test_client()
    auth = bearer(login(client, "owner@example.test"))
    admin = bearer(login(client, "root@example.test"))
    owner_id = api(client, "GET", "/auth/me", auth).get_json()["id"]
    for row in api(client, "GET", "/account/limits", auth).get_json()["data"]:
        raised = api(client, "PUT", f"/admin/users/{owner_id}/limits", admin,
                     json={"resource": row["resource"], "value": 10_000_000})
        assert raised.status_code == 200, raised.get_json()
    return auth, catalog


def _stop_all(*servers: Server) -> None:
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@postgres
def test_an_event_written_through_one_process_reaches_a_stream_on_the_other(tmp_path):
    app = create_app({"DATA_DIR": str(tmp_path / "data")})
    make_user(app, "owner@example.test")
    auth = bearer(login(app.test_client(), "owner@example.test"))
    a, b = _two(tmp_path)
    received: list[dict] = []
    try:
        def listen():
            with requests.get(a.url + "/api/v1/events/stream", headers=auth, stream=True,
                              timeout=60) as stream:
                for line in stream.iter_lines(decode_unicode=True):
                    if line.startswith("data:"):
                        received.append(json.loads(line[5:]))
                        if received[-1]["type"] == "api_key.created":
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(1.0)  # the stream is open and waiting
        created = requests.post(b.url + "/api/v1/api-keys", headers=auth, timeout=10,
                                json={"name": "from b", "scopes": ["instances:read"]})
        assert created.status_code == 201, created.text
        listener.join(timeout=20)
        assert any(e["type"] == "api_key.created" for e in received), received
    finally:
        _stop_all(a, b)


@postgres
def test_jobs_sent_to_two_processes_each_run_once(tmp_path):
    auth, catalog = _owner_with_room(tmp_path)
    a, b = _two(tmp_path)
    count = 200
    try:
        project = requests.get(a.url + "/api/v1/projects", headers=auth,
                               timeout=10).json()["data"][0]["id"]
        for n in range(count):
            response = requests.post(
                f"{(a, b)[n % 2].url}/api/v1/projects/{project}/instances", headers=auth,
                timeout=30, json={"name": f"web-{n}", "plan_id": catalog["plan"],
                                  "image_id": catalog["image"]})
            assert response.status_code == 202, response.text
        conn = psycopg2.connect(os.environ["APPLIANCE_DATABASE_URL"])
        try:
            def finished():
                with conn.cursor() as cur:
                    cur.execute('SELECT "status", "attempts" FROM "job" '
                                "WHERE \"type\" = 'instance.create'")
                    rows = cur.fetchall()
                conn.rollback()
                done = [r for r in rows if r[0] in ("succeeded", "failed")]
                return rows if len(done) == count else None

            rows = wait_for(finished, "every create job to finish", timeout=300)
        finally:
            conn.close()
        assert [status for status, _ in rows] == ["succeeded"] * count
        assert [attempts for _, attempts in rows] == [1] * count  # each claimed once
    finally:
        _stop_all(a, b)


def test_the_suite_knows_which_database_it_runs_on():
    assert pgsupport.ENABLED == bool(os.environ.get("APPLIANCE_TEST_DATABASE_URL"))
