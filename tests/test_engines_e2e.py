"""The whole path on real engines: HTTP API -> service -> job -> driver -> Incus / Docker.

A served appliance with one node of the engine creates an instance from the locally
built test image, then stops, starts, reboots, resizes, rebuilds and deletes it, each
through the API with job polling, and the engine's own state is checked after each step.
Another test kills the appliance with SIGKILL during a create job and restarts it: the
job ends, the engine holds no orphan and the row agrees with the engine.

These run wherever the engines answer; under CI=true a missing engine is a failure.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time

import pytest
import requests

from appliance import create_app, drivers
from appliance.models import Image, Plan
from appliance.services import clock
from appliance.services.instances import nodes
from tests.conftest import Server
from tests.driver_contract import require_engine
from tests.factories import PASSWORD, make_user

IMAGE = "appliance-test/busybox"
JOB_TIMEOUT = 90


def _prepare(data_dir, engine: str) -> str:
    """A data directory with a user, two plans and a healthy node of `engine`."""
    require_engine(engine, lambda: drivers.connect(engine, "").info())
    app = create_app({"DATA_DIR": str(data_dir)})
    make_user(app, "owner@example.test")
    with app.app_context():
        now = clock.now()
        for slug, vcpus, memory in (("small", 1, 128), ("large", 2, 256)):
            Plan.create(id=f"pln_{slug}", slug=slug, name=slug.title(), vcpus=vcpus,
                        memory_mb=memory, disk_gb=1, price_hourly=1, price_monthly_cap=100,
                        created_at=now, updated_at=now)
        node = nodes._insert(engine, engine, "", options={}, enabled=True,
                             capacity=nodes.Capacity(8, 8192, 100))
        assert nodes.check_health(node).health == "healthy"
        image = Image.get(Image.node == node.id, Image.ref == IMAGE)
        return image.id


class Client:
    def __init__(self, url: str) -> None:
        self.url = url + "/api/v1"
        self.session = requests.Session()
        token = self.session.post(self.url + "/auth/login", timeout=10, json={
            "email": "owner@example.test", "password": PASSWORD}).json()
        self.session.headers["Authorization"] = f"Bearer {token['access_token']}"
        self.project = self.get("/projects")["data"][0]["id"]

    def get(self, path: str) -> dict:
        response = self.session.get(self.url + path, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def accepted(self, method: str, path: str, **body) -> dict:
        response = self.session.request(method, self.url + path, json=body or None, timeout=30)
        assert response.status_code == 202, response.text
        return response.json()

    def finish(self, job: dict) -> dict:
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            job = self.get(f"/projects/{self.project}/jobs/{job['id']}")
            if job["status"] in ("succeeded", "failed"):
                return job
            assert time.monotonic() < deadline, f"job {job['type']} did not finish: {job}"
            time.sleep(0.2)


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir)})
    server.wait()
    return server


@pytest.mark.parametrize("engine", ["incus", "docker"])
def test_the_lifecycle_through_the_api_matches_the_engine(tmp_path, engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    server = _serve(data_dir)
    try:
        api = Client(server.url)
        driver = drivers.connect(engine, "")
        base = f"/projects/{api.project}/instances"
        created = api.accepted("POST", base, name="e2e", plan_id="small", image_id=image_id)
        path = f"{base}/{created['instance']['id']}"
        ref = "ins-" + created["instance"]["id"].removeprefix("ins_")
        assert api.finish(created["job"])["status"] == "succeeded"
        instance = api.get(path)
        assert (instance["status"], instance["power_state"]) == ("running", "running")
        state = driver.state(ref)
        assert state.power == "running"
        if engine == "incus":
            assert instance["ipv4"].startswith("10.123.45.")
        assert instance["ipv4"] in state.addresses

        for action, engine_power in (("stop", "stopped"), ("start", "running"),
                                     ("reboot", "running")):
            job = api.accepted("POST", f"{path}/{action}")["job"]
            assert api.finish(job)["status"] == "succeeded", action
            assert api.get(path)["power_state"] == engine_power
            assert driver.state(ref).power == engine_power, action

        job = api.accepted("POST", f"{path}/resize", plan_id="large")["job"]
        assert api.finish(job)["status"] == "succeeded"
        assert api.get(path)["plan"]["slug"] == "large"
        assert driver.state(ref).power == "running"

        job = api.accepted("POST", f"{path}/rebuild", image_id=image_id)["job"]
        assert api.finish(job)["status"] == "succeeded"
        assert api.get(path)["status"] == "running"
        assert driver.state(ref).power == "running"

        job = api.accepted("DELETE", path + "?final_backup=true")["job"]
        assert api.finish(job)["status"] == "succeeded"
        assert api.session.get(api.url + path, timeout=10).status_code == 404
        assert driver.state(ref).power == "missing"
        # The final backup outlives the instance in the backup store, until it is deleted.
        backup = api.get(f"/projects/{api.project}/backups")["data"][0]
        assert (backup["status"], backup["instance_name"]) == ("available", "e2e")
        archive = data_dir / "backups" / f"{backup['id']}.{engine}.archive"
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == backup["sha256"]
        gone = api.session.delete(f"{api.url}/projects/{api.project}/backups/{backup['id']}",
                                  timeout=60)
        assert gone.status_code == 204, gone.text
        assert not archive.exists()
    finally:
        server.stop()


@pytest.mark.parametrize("engine", ["incus", "docker"])
def test_a_kill_during_create_leaves_no_orphan_and_the_row_agrees(tmp_path, engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    server = _serve(data_dir)
    api = Client(server.url)
    created = api.accepted("POST", f"/projects/{api.project}/instances", name="crash",
                           plan_id="small", image_id=image_id)
    time.sleep(0.3)  # the job is under way on the engine
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    server = _serve(data_dir)
    driver = drivers.connect(engine, "")
    ref = "ins-" + created["instance"]["id"].removeprefix("ins_")
    try:
        api = Client(server.url)
        job = api.finish(created["job"])
        instance = api.get(f"/projects/{api.project}/instances/{created['instance']['id']}")
        on_engine = [name for name in driver.inventory("ins-") if name == ref]
        if job["status"] == "succeeded":
            assert instance["status"] == "running"
            assert on_engine == [ref] and driver.state(ref).power == "running"
        else:
            assert instance["status"] == "failed"
            assert on_engine == []
    finally:
        server.stop()
        driver.delete(ref)
