"""Instances on a simulated node: lifecycle, preconditions, quotas, jobs and their retries."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import pytest
import requests

from appliance import create_app
from appliance.drivers.base import DriverError
from appliance.drivers.fake import FakeDriver
from appliance.models import Job, Plan
from appliance.services import clock
from appliance.services.instances import jobs, lifecycle
from tests import sshkeys
from tests.factories import (
    api,
    bearer,
    create_instance,
    create_key,
    fake_catalog,
    key_auth,
    login,
    make_user,
    run_jobs,
    wait_for,
)


@pytest.fixture
def project(owner_project):
    """The owner's default project, where these tests make their instances."""
    return owner_project


def _path(project, instance_id="", suffix=""):
    return f"/projects/{project}/instances" + (f"/{instance_id}" if instance_id else "") + suffix


def _get(client, owner, project, instance_id):
    return api(client, "GET", _path(project, instance_id), owner).get_json()


def test_creating_answers_202_with_the_job_then_the_instance_runs(app, client, owner, project,
                                                                  catalog):
    response = api(client, "POST", _path(project), owner,
                   json={"name": "web-1", "plan_id": "small", "image_id": catalog["image"]})
    assert response.status_code == 202
    body = response.get_json()
    assert body["instance"]["status"] == "creating"
    assert body["job"]["status"] == "queued" and body["job"]["progress"]["total"] == 3
    assert body["instance"]["node"]["simulated"] is True
    assert len(body["password"]) == 20
    run_jobs(app)
    instance = _get(client, owner, project, body["instance"]["id"])
    assert (instance["status"], instance["power_state"]) == ("running", "running")
    assert instance["ipv4"].startswith("10.99.") and instance["job"] is None
    job = api(client, "GET", f"/projects/{project}/jobs/{body['job']['id']}", owner).get_json()
    assert job["status"] == "succeeded" and job["progress"]["percent"] == 100
    # The generated password is readable until acknowledged, then gone.
    password_path = _path(project, instance["id"], "/password")
    assert api(client, "GET", password_path, owner).get_json() == {"password": body["password"]}
    assert api(client, "DELETE", password_path, owner).status_code == 204
    assert api(client, "GET", password_path, owner).get_json() == {"password": None}


def test_a_chosen_password_is_not_shown_back(client, owner, project, catalog):
    response = api(client, "POST", _path(project), owner,
                   json={"name": "web-1", "plan_id": "small", "image_id": catalog["image"],
                         "password": "my own secret"})
    assert response.get_json()["password"] is None


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Web_1"}, "name"),
    ({"name": "-web"}, "name"),
    ({"name": "x" * 65}, "name"),
    ({"name": "web-"}, "name"),
    ({"plan_id": "nope"}, "plan_id"),
    ({"image_id": "img_nope"}, "image_id"),
    ({"password": "short"}, "password"),
    ({"ssh_key_ids": ["ssh_nope"]}, "ssh_key_ids"),
])
def test_bad_creations_name_the_field(client, owner, project, catalog, body, field):  # noqa: PLR0917
    payload = {"name": "web-1", "plan_id": "small", "image_id": catalog["image"], **body}
    response = api(client, "POST", _path(project), owner, json=payload)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["details"]["field"] == field


def test_names_are_unique_among_live_instances(app, client, owner, project, catalog):
    first = create_instance(app, client, owner, project, catalog)
    again = api(client, "POST", _path(project), owner,
                json={"name": "web-1", "plan_id": "small", "image_id": catalog["image"]})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "name_taken"
    api(client, "DELETE", _path(project, first["id"]), owner)
    run_jobs(app)
    assert api(client, "GET", _path(project, first["id"]), owner).status_code == 404
    create_instance(app, client, owner, project, catalog)  # the name is free again


def test_power_actions_check_the_state_first(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    start = api(client, "POST", _path(project, instance["id"], "/start"), owner)
    assert start.status_code == 409
    assert start.get_json()["error"]["details"] == {"status": "running", "allowed": ["stopped"]}
    assert api(client, "POST", _path(project, instance["id"], "/shutdown"),
               owner).status_code == 202
    busy = api(client, "POST", _path(project, instance["id"], "/reboot"), owner)
    assert busy.status_code == 409
    assert busy.get_json()["error"]["code"] == "operation_in_progress"
    run_jobs(app)
    assert _get(client, owner, project, instance["id"])["status"] == "stopped"
    assert _get(client, owner, project, instance["id"])["ipv4"] is None
    assert api(client, "POST", _path(project, instance["id"], "/start"), owner).status_code == 202
    run_jobs(app)
    assert _get(client, owner, project, instance["id"])["status"] == "running"
    events = api(client, "GET", _path(project, instance["id"], "/events"), owner).get_json()
    assert [e["type"] for e in events["data"]][:2] == ["instance.started",
                                                       "instance.start_requested"]


def test_resize_refuses_a_smaller_disk_and_applies_a_bigger_plan(app, client, owner, project,
                                                                 catalog):
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_tiny", slug="tiny", name="Tiny", vcpus=1, memory_mb=256, disk_gb=5,
                    price_hourly=1, price_monthly_cap=100, created_at=now, updated_at=now)
    instance = create_instance(app, client, owner, project, catalog)
    smaller = api(client, "POST", _path(project, instance["id"], "/resize"), owner,
                  json={"plan_id": "tiny"})
    assert smaller.status_code == 400
    assert smaller.get_json()["error"]["code"] == "disk_cannot_shrink"
    bigger = api(client, "POST", _path(project, instance["id"], "/resize"), owner,
                 json={"plan_id": "large"})
    assert bigger.status_code == 202
    run_jobs(app)
    resized = _get(client, owner, project, instance["id"])
    assert resized["plan"]["slug"] == "large" and resized["status"] == "running"


def test_rebuild_rename_password_and_keys(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    path = _path(project, instance["id"])
    assert api(client, "POST", path + "/rebuild", owner,
               json={"image_id": catalog["other_image"]}).status_code == 202
    run_jobs(app)
    assert _get(client, owner, project, instance["id"])["image"]["id"] == catalog["other_image"]
    renamed = api(client, "PATCH", path, owner, json={"name": "db-1"})
    assert renamed.get_json()["name"] == "db-1"
    reset = api(client, "POST", path + "/reset-password", owner, json={})
    assert reset.status_code == 202 and len(reset.get_json()["password"]) == 20
    run_jobs(app)
    with app.app_context():
        driver = FakeDriver("fake://tests")
        ref = "ins-" + instance["id"].removeprefix("ins_")
        assert driver._get(ref)["password"] == reset.get_json()["password"]
    assert api(client, "POST", path + "/ssh-keys", owner,
               json={"public_key": sshkeys.ED25519[0]}).status_code == 202
    run_jobs(app)
    code, output = FakeDriver("fake://tests").exec(ref, ["cat", "/root/.ssh/authorized_keys"])
    assert sshkeys.ED25519[0].rsplit(" ", 1)[0] in output
    logs = api(client, "GET", path + "/logs", owner)
    assert logs.status_code == 200 and "rebuilt from fake/alpine-3" in logs.get_data(as_text=True)


def test_quotas_and_capacity_are_checked_before_anything_is_made(app, client, owner, project,
                                                                 catalog):
    owner_id = api(client, "GET", "/auth/me", owner).get_json()["id"]
    from appliance.models import User
    from appliance.services.limits import quotas

    with app.app_context():
        user = User.get_by_id(owner_id)
        quotas._store_override(user, "instances", 1)
    create_instance(app, client, owner, project, catalog)
    refused = api(client, "POST", _path(project), owner,
                  json={"name": "web-2", "plan_id": "small", "image_id": catalog["image"]})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["details"]["resource"] == "instances"
    limits = {r["resource"]: r for r in api(client, "GET", "/account/limits",
                                            owner).get_json()["data"]}
    assert (limits["instances"]["used"], limits["vcpus"]["used"],
            limits["memory_mb"]["used"]) == (1, 1, 512)
    with app.app_context():
        quotas._store_override(user, "instances", 10)
        from appliance.models import Node

        Node.update(capacity_memory_mb=600).execute()
    full = api(client, "POST", _path(project), owner,
               json={"name": "web-2", "plan_id": "small", "image_id": catalog["image"]})
    assert full.status_code == 503 and full.get_json()["error"]["code"] == "no_capacity"


def test_a_project_with_instances_cannot_be_deleted(app, client, owner, catalog):
    from tests.factories import create_project

    project = create_project(client, owner)
    instance = create_instance(app, client, owner, project, catalog)
    refused = api(client, "DELETE", f"/projects/{project}", owner)
    assert refused.status_code == 409
    assert refused.get_json()["error"]["details"] == {"instances": 1}
    api(client, "DELETE", _path(project, instance["id"]), owner)
    run_jobs(app)
    assert api(client, "DELETE", f"/projects/{project}", owner).status_code == 204


def test_key_scopes_gate_reading_writing_and_deleting(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    reader, _ = create_key(client, owner, scopes=["instances:read"])
    writer, _ = create_key(client, owner, scopes=["instances:read", "instances:write"])
    assert api(client, "GET", _path(project), key_auth(reader)).status_code == 200
    denied = api(client, "POST", _path(project, instance["id"], "/stop"), key_auth(reader))
    assert denied.get_json()["error"]["details"] == {"scope": "instances:write"}
    assert api(client, "POST", _path(project, instance["id"], "/stop"),
               key_auth(writer)).status_code == 202
    run_jobs(app)
    no_delete = api(client, "DELETE", _path(project, instance["id"]), key_auth(writer))
    assert no_delete.get_json()["error"]["details"] == {"scope": "instances:delete"}


@pytest.fixture
def engine_failures(monkeypatch) -> list[DriverError]:
    """Errors the fake engine raises on its next `create` calls, in order."""
    failures: list[DriverError] = []
    real_create = FakeDriver.create

    def create(self, spec, started=None):
        if failures:
            raise failures.pop(0)
        return real_create(self, spec, started)

    monkeypatch.setattr(FakeDriver, "create", create)
    return failures


def test_a_transient_engine_error_is_retried_and_a_permanent_one_fails(  # noqa: PLR0917
        app, client, owner, project, catalog, engine_failures):
    clock.freeze(clock.now())
    engine_failures.append(DriverError("engine busy", permanent=False))
    instance = create_instance(app, client, owner, project, catalog, run=False)
    assert run_jobs(app) == 1
    job = api(client, "GET", f"/projects/{project}/jobs", owner).get_json()["data"][0]
    assert (job["status"], job["attempts"]) == ("queued", 1)
    assert "engine busy" in job["progress"]["message"]
    assert run_jobs(app) == 0  # not due yet
    clock.advance(jobs.RETRY_BASE + dt.timedelta(seconds=1))
    assert run_jobs(app) == 1
    assert _get(client, owner, project, instance["id"])["status"] == "running"

    engine_failures.append(DriverError("unknown image", permanent=True))
    broken = create_instance(app, client, owner, project, catalog, name="web-2")
    assert _get(client, owner, project, broken["id"])["status"] == "failed"
    job = api(client, "GET", f"/projects/{project}/jobs", owner).get_json()["data"][0]
    assert (job["status"], job["error"], job["error_code"]) == ("failed", "unknown image",
                                                                "engine_error")


def test_a_job_whose_worker_died_is_picked_up_when_its_lease_expires(app, client, owner,
                                                                    project, catalog):
    instance = create_instance(app, client, owner, project, catalog, run=False)
    with app.app_context():
        job = Job.get(Job.instance == instance["id"])
        assert jobs._claim(job.id)  # a worker claimed it ... and was killed
    assert run_jobs(app) == 0  # the lease still holds
    clock.freeze(clock.now() + jobs.LEASE + dt.timedelta(seconds=1))
    assert run_jobs(app) == 1
    assert _get(client, owner, project, instance["id"])["status"] == "running"
    with app.app_context():
        assert Job.get_by_id(job.id).attempts == 2


def test_a_served_appliance_runs_jobs_in_the_background(serve, tmp_path):
    data = tmp_path / "served"
    app = create_app({"DATA_DIR": str(data)})
    catalog = fake_catalog(app, endpoint="fake://served")
    make_user(app, "owner@example.test")
    server = serve(APPLIANCE_DATA_DIR=str(data))
    session = requests.Session()
    token = session.post(server.url + "/api/v1/auth/login", timeout=10, json={
        "email": "owner@example.test", "password": "correct horse battery staple"}).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    project = session.get(server.url + "/api/v1/projects", timeout=10).json()["data"][0]["id"]
    created = session.post(f"{server.url}/api/v1/projects/{project}/instances", timeout=10,
                           json={"name": "web-1", "plan_id": "small",
                                 "image_id": catalog["image"]})
    assert created.status_code == 202
    url = f"{server.url}/api/v1/projects/{project}/instances/{created.json()['instance']['id']}"
    # The served process runs the job on its own clock and thread: wait for what it shows.
    wait_for(lambda: session.get(url, timeout=10).json()["status"] == "running",
             "the job to run", timeout=15)


def test_the_reconciler_shows_changes_made_outside_and_reports_strangers(app, client, owner,
                                                                        project, catalog):
    from appliance.drivers.base import InstanceSpec, Limits
    from appliance.services.instances import engine_jobs

    first = create_instance(app, client, owner, project, catalog)
    second = create_instance(app, client, owner, project, catalog, name="web-2")
    engine = FakeDriver("fake://tests")
    engine.stop("ins-" + first["id"].removeprefix("ins_"))
    engine.delete("ins-" + second["id"].removeprefix("ins_"))
    engine.create(InstanceSpec("ins-stranger", "fake/debian-12", Limits(1, 128, 1)))
    with app.app_context():
        assert engine_jobs.reconcile_all() == 2
        assert engine_jobs.reconcile_all() == 0  # nothing more to say
    assert _get(client, owner, project, first["id"])["status"] == "stopped"
    gone = _get(client, owner, project, second["id"])
    assert (gone["status"], gone["power_state"]) == ("failed", "missing")
    events = api(client, "GET", _path(project, second["id"], "/events"), owner).get_json()
    assert events["data"][0]["type"] == "instance.missing"
    make_user(app, "root@example.test", role="admin")
    node = api(client, "GET", f"/admin/nodes/{catalog['node']}",
               bearer(login(client, "root@example.test"))).get_json()
    assert node["unknown_instances"] == ["ins-stranger"]
    assert engine.state("ins-stranger").power == "running"  # reported, never touched


def test_an_unreachable_engine_refuses_creation_with_503(app, client, owner, project, catalog):
    from appliance.models import Node

    with app.app_context():
        Node.update(health="unhealthy").execute()
    response = api(client, "POST", _path(project), owner,
                   json={"name": "web-1", "plan_id": "small", "image_id": catalog["image"]})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "engine_unavailable"
    assert api(client, "GET", _path(project), owner).get_json()["data"] == []


@pytest.fixture
def create_then_fail(monkeypatch):
    real_create = FakeDriver.create

    def create(self, spec, started=None):
        real_create(self, spec, started)
        raise DriverError("the engine fell over after creating", permanent=True)

    monkeypatch.setattr(FakeDriver, "create", create)


def test_the_instance_shows_running_once_the_engine_runs_it(  # noqa: PLR0917
        app, client, owner, project, catalog, monkeypatch):
    """Before the driver's create returns (it may still set the password), the row already
    says running; a transient failure after that puts it back to creating for the retry."""
    real_create, seen = FakeDriver.create, []

    def create(self, spec, started=None):
        def look() -> None:
            started()
            with app.app_context():
                seen.append(_get(client, owner, project, instance_id)["status"])

        real_create(self, spec, look)
        self.delete(spec.name)
        raise DriverError("chpasswd timed out", permanent=False)

    monkeypatch.setattr(FakeDriver, "create", create)
    instance_id = create_instance(app, client, owner, project, catalog, run=False)["id"]
    assert run_jobs(app) == 1
    assert seen == ["running"]
    shown = _get(client, owner, project, instance_id)
    assert (shown["status"], shown["power_state"], shown["ipv4"]) == ("creating", "unknown",
                                                                      None)


@pytest.mark.usefixtures("create_then_fail")
def test_a_failed_create_leaves_nothing_on_the_engine(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    assert _get(client, owner, project, instance["id"])["status"] == "failed"
    assert FakeDriver("fake://tests").inventory("ins-") == []


def test_jobs_interrupted_by_a_crash_resume_at_start_up(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog, run=False)
    with app.app_context():
        job = Job.get(Job.instance == instance["id"])
        assert jobs._claim(job.id)  # the process died while running it
        assert jobs.recover_interrupted() == 1
    assert run_jobs(app) == 1  # at once, not when the lease would have run out
    assert _get(client, owner, project, instance["id"])["status"] == "running"


def test_a_create_interrupted_before_the_start_is_made_again(app, client, owner, project,
                                                             catalog):
    from appliance.drivers.base import InstanceSpec, Limits

    instance = create_instance(app, client, owner, project, catalog, run=False)
    ref = "ins-" + instance["id"].removeprefix("ins_")
    engine = FakeDriver("fake://tests")
    engine.create(InstanceSpec(ref, "fake/debian-12", Limits(1, 512, 10)))  # half-made:
    engine.stop(ref)  # created, never started, no keys
    run_jobs(app)
    assert _get(client, owner, project, instance["id"])["status"] == "running"
    assert engine.state(ref).power == "running"


def test_a_create_interrupted_after_the_start_still_sets_the_password(app, client, owner,
                                                                     project, catalog):
    from appliance.drivers.base import InstanceSpec, Limits

    response = api(client, "POST", _path(project), owner,
                   json={"name": "web-1", "plan_id": catalog["plan"],
                         "image_id": catalog["image"], "password": "rescued horse"})
    ref = "ins-" + response.get_json()["instance"]["id"].removeprefix("ins_")
    engine = FakeDriver("fake://tests")
    engine.create(InstanceSpec(ref, "fake/debian-12", Limits(1, 512, 10)))  # started, then
    assert engine._get(ref)["password"] is None  # the process died before the password
    run_jobs(app)
    assert engine._get(ref)["password"] == "rescued horse"


def test_the_list_follows_every_change_even_from_another_connection(  # noqa: PLR0917
        app, client, owner, project, catalog, data_dir, monkeypatch):
    """Pages are served from a cache kept under the project's listing version; any write
    to the instances, their jobs or the catalog rows shown is seen by the next request
    when this process made it, and within EXTERNAL_WRITES_SEEN_WITHIN when another did."""
    monkeypatch.setattr(lifecycle, "EXTERNAL_WRITES_SEEN_WITHIN", 0.3)
    instance = create_instance(app, client, owner, project, catalog)

    def listed():
        return api(client, "GET", _path(project), owner).get_json()["data"][0]

    assert listed()["name"] == instance["name"] and listed()["job"] is None
    path = _path(project, instance["id"])
    assert api(client, "POST", path + "/stop", owner, json={}).status_code == 202
    assert listed()["job"]["type"] == "instance.stop"
    run_jobs(app)
    assert listed()["job"] is None and listed()["status"] == "stopped"
    with sqlite3.connect(data_dir / "appliance.db") as other:
        other.execute("UPDATE instance SET ipv4 = '10.1.2.3' WHERE id = ?", (instance["id"],))
        other.execute("UPDATE plan SET name = 'Renamed' WHERE slug = 'small'")
    # This process did not count those writes: the page kept under the old version is
    # served until the version is read again, EXTERNAL_WRITES_SEEN_WITHIN seconds after
    # it last was (time.monotonic, which services.clock does not move). Wait for that,
    # allowing a little for the requests themselves, but less than the default window.
    wait_for(lambda: listed()["ipv4"] == "10.1.2.3", "the other connection's write",
             timeout=lifecycle.EXTERNAL_WRITES_SEEN_WITHIN + 0.5)
    assert (listed()["ipv4"], listed()["plan"]["name"]) == ("10.1.2.3", "Renamed")
    with app.app_context():
        version = lifecycle.listing_version(project)
        with sqlite3.connect(data_dir / "appliance.db") as other:
            other.execute("UPDATE node SET last_checked_at = '2026-01-01'")  # not shown
        assert lifecycle.listing_version(project) == version


def test_a_repeated_list_does_not_ask_the_database_while_nothing_was_written(  # noqa: PLR0917
        app, client, owner, project, catalog, monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    asked = []
    real = lifecycle.listing_version
    monkeypatch.setattr(lifecycle, "listing_version",
                        lambda project_id: asked.append(project_id) or real(project_id))
    for _ in range(3):
        assert api(client, "GET", _path(project), owner).status_code == 200
    assert len(asked) == 1
    assert api(client, "PATCH", _path(project, instance["id"]), owner,
               json={"name": "db-2"}).status_code == 200
    assert api(client, "GET", _path(project), owner).get_json()["data"][0]["name"] == "db-2"
    assert len(asked) == 2


def test_a_delete_can_keep_a_final_backup_that_outlives_the_instance(app, client, owner,
                                                                     project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    path = _path(project, instance["id"])
    response = api(client, "DELETE", path + "?final_backup=true", owner)
    assert response.status_code == 202 and response.get_json()["job"]["progress"]["total"] == 3
    run_jobs(app)
    assert api(client, "GET", path, owner).status_code == 404
    backups = api(client, "GET", f"/projects/{project}/backups", owner).get_json()["data"]
    assert [(b["instance_name"], b["status"], b["kind"]) for b in backups] == [
        (instance["name"], "available", "final")]
    archive = Path(app.config["APPLIANCE"]["BACKUP_DIR"]) / f"{backups[0]['id']}.fake.archive"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == backups[0]["sha256"]
    assert archive.stat().st_size == backups[0]["size_bytes"]
    one = f"/projects/{project}/backups/{backups[0]['id']}"
    assert api(client, "DELETE", one, owner).status_code == 204
    assert not archive.exists()
    assert api(client, "GET", one, owner).get_json()["error"]["code"] == "backup_not_found"
    assert api(client, "GET", f"/projects/{project}/backups", owner).get_json()["data"] == []


def test_a_final_backup_that_fails_deletes_nothing(app, client, owner, project, catalog,  # noqa: PLR0917
                                                   monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    path = _path(project, instance["id"])

    def broken(self, ref, out):
        raise DriverError("the engine cannot read the disk", permanent=True)

    monkeypatch.setattr(FakeDriver, "export_archive", broken)
    assert api(client, "DELETE", path + "?final_backup=true", owner).status_code == 202
    run_jobs(app)
    assert _get(client, owner, project, instance["id"])["status"] == "running"
    backup = api(client, "GET", f"/projects/{project}/backups", owner).get_json()["data"][0]
    assert backup["status"] == "failed" and "cannot read the disk" in backup["error"]
    assert list(Path(app.config["APPLIANCE"]["BACKUP_DIR"]).iterdir()) == []


def test_a_final_backup_needs_an_engine_that_makes_archives(app, client, owner, project, catalog,  # noqa: PLR0917
                                                       monkeypatch):
    from appliance.drivers.base import Capabilities

    instance = create_instance(app, client, owner, project, catalog)
    monkeypatch.setattr(FakeDriver, "capabilities", lambda self: Capabilities())
    response = api(client, "DELETE", _path(project, instance["id"]) + "?final_backup=true",
                   owner)
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert (error["code"], error["details"]["capability"]) == ("unsupported", "backups")
    assert _get(client, owner, project, instance["id"])["status"] == "running"
    assert api(client, "GET", f"/projects/{project}/backups", owner).get_json()["data"] == []
