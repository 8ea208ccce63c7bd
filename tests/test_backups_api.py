"""Backups over the JSON API on the simulated engine: take, list, restore (also onto
another instance), create an instance from one, delete; limits, capabilities, one job
per instance, the store's files and checksums, events, and failures that keep nothing.

The same path on real Incus and Docker is tests/test_backups_engines.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from appliance.drivers.base import Capabilities, DriverError
from appliance.drivers.fake import WRITE_FILE, FakeDriver
from appliance.models import Backup, Job
from appliance.services.instances import backups as backup_rows
from tests.factories import (
    api,
    create_instance,
    create_key,
    default_project,
    fake_catalog,
    key_auth,
    make_node,
    make_user,
    run_jobs,
    signed_in,
)


@pytest.fixture
def project(owner_project):
    return owner_project


def engine() -> FakeDriver:
    return FakeDriver("fake://tests")


def ref_of(instance_id: str) -> str:
    return "ins-" + instance_id.removeprefix("ins_")


def write(instance_id: str, path: str, content: str) -> None:
    assert engine().exec(ref_of(instance_id), ["sh", "-c", WRITE_FILE, "sh", path,
                                               content]) == (0, "")


def read(instance_id: str, path: str) -> str | None:
    code, output = engine().exec(ref_of(instance_id), ["cat", path])
    return output if code == 0 else None


def store(app) -> Path:
    return Path(app.config["APPLIANCE"]["BACKUP_DIR"])


def base(project: str, instance_id: str) -> str:
    return f"/projects/{project}/instances/{instance_id}/backups"


def back_up(app, client, headers, project, instance_id, **body) -> dict:
    response = api(client, "POST", base(project, instance_id), headers, json=body)
    assert response.status_code == 202, response.get_json()
    run_jobs(app)
    return api(client, "GET", f"{base(project, instance_id)}/"
                              f"{response.get_json()['backup']['id']}", headers).get_json()


def events_of(client, headers, kind: str) -> list[dict]:
    return api(client, "GET", "/events", headers, query_string={"type": kind}).get_json()["data"]


def test_a_backup_is_an_archive_in_the_store_with_its_size_and_checksum(app, client, owner,
                                                                        project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    accepted = api(client, "POST", base(project, instance["id"]), owner,
                   json={"name": "before the upgrade"})
    assert accepted.status_code == 202
    body = accepted.get_json()
    assert (body["backup"]["status"], body["backup"]["kind"]) == ("creating", "manual")
    assert (body["job"]["type"], body["job"]["status"]) == ("backup.create", "queued")
    run_jobs(app)
    listed = api(client, "GET", base(project, instance["id"]), owner).get_json()["data"]
    assert len(listed) == 1
    backup = listed[0]
    assert (backup["name"], backup["status"], backup["engine"]) == (
        "before the upgrade", "available", "fake")
    archive = store(app) / f"{backup['id']}.fake.archive"
    assert archive.stat().st_size == backup["size_bytes"] > 0
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == backup["sha256"]
    assert backup["size_gb"] == 1 and backup["disk_gb"] == 10  # the plan "small"'s disk
    assert [p.name for p in store(app).iterdir()] == [archive.name]  # no .part left
    created = events_of(client, owner, "backup.created")
    assert created[0]["data"]["backup"]["id"] == backup["id"]
    assert created[0]["data"]["backup"]["sha256"] == backup["sha256"]


def test_a_default_name_says_which_instance_and_when(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog, name="db-1")
    backup = back_up(app, client, owner, project, instance["id"])
    assert backup["name"].startswith("db-1 20")


def test_a_restore_brings_the_old_files_back_and_keeps_it_running(app, client, owner,
                                                                  project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    write(instance["id"], "/root/notes", "version one")
    backup = back_up(app, client, owner, project, instance["id"])
    write(instance["id"], "/root/notes", "version two")
    write(instance["id"], "/root/new", "made later")
    response = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/restore",
                   owner)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["job"]["type"] == "backup.restore"
    assert api(client, "GET", f"{base(project, instance['id'])}/{backup['id']}",
               owner).get_json()["status"] == "restoring"
    run_jobs(app)
    assert read(instance["id"], "/root/notes") == "version one"
    assert read(instance["id"], "/root/new") is None
    shown = api(client, "GET", f"/projects/{project}/instances/{instance['id']}",
                owner).get_json()
    assert (shown["status"], shown["power_state"]) == ("running", "running")
    assert api(client, "GET", f"{base(project, instance['id'])}/{backup['id']}",
               owner).get_json()["status"] == "available"
    restored = events_of(client, owner, "backup.restored")[0]["data"]
    assert (restored["backup"]["id"], restored["instance_id"]) == (backup["id"], instance["id"])


def test_a_stopped_instance_is_restored_and_stays_stopped(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    api(client, "POST", f"/projects/{project}/instances/{instance['id']}/stop", owner)
    run_jobs(app)
    api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/restore", owner)
    run_jobs(app)
    shown = api(client, "GET", f"/projects/{project}/instances/{instance['id']}",
                owner).get_json()
    assert shown["power_state"] == "stopped"


def test_a_backup_of_another_instance_is_cloned_back_onto_this_one(app, client, owner,
                                                                   project, catalog):
    source = create_instance(app, client, owner, project, catalog, name="source")
    target = create_instance(app, client, owner, project, catalog, name="target")
    write(source["id"], "/root/app.conf", "tuned")
    backup = back_up(app, client, owner, project, source["id"])
    response = api(client, "POST", f"{base(project, target['id'])}/{backup['id']}/restore",
                   owner)
    assert response.status_code == 202
    run_jobs(app)
    assert read(target["id"], "/root/app.conf") == "tuned"
    assert engine().exec(ref_of(target["id"]), ["hostname"]) == (0, ref_of(target["id"]) + "\n")
    # It is still listed under the instance it was taken of.
    assert api(client, "GET", base(project, target["id"]), owner).get_json()["data"] == []


def test_a_new_instance_starts_from_a_final_backup_of_a_deleted_one(app, client, owner,
                                                                    project, catalog):
    gone = create_instance(app, client, owner, project, catalog, name="gone")
    write(gone["id"], "/root/data", "kept past the end")
    api(client, "DELETE", f"/projects/{project}/instances/{gone['id']}?final_backup=true",
        owner)
    run_jobs(app)
    assert engine().state(ref_of(gone["id"])).power == "missing"
    final = api(client, "GET", f"/projects/{project}/backups", owner,
                query_string={"kind": "final"}).get_json()["data"][0]
    assert api(client, "GET", base(project, gone["id"]), owner).status_code == 404
    created = api(client, "POST", f"/projects/{project}/instances", owner,
                  json={"name": "reborn", "plan_id": "small", "backup_id": final["id"]})
    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    assert body["password"]  # a new instance gets a new password, shown once
    assert api(client, "GET", f"/projects/{project}/backups/{final['id']}",
               owner).get_json()["status"] == "restoring"
    run_jobs(app)
    instance = api(client, "GET", f"/projects/{project}/instances/{body['instance']['id']}",
                   owner).get_json()
    assert instance["status"] == "running" and instance["image"]["id"] == catalog["image"]
    assert read(instance["id"], "/root/data") == "kept past the end"
    assert engine()._get(ref_of(instance["id"]))["password"] == body["password"]
    assert api(client, "GET", f"/projects/{project}/backups/{final['id']}",
               owner).get_json()["status"] == "available"


def test_a_backup_needs_a_plan_with_its_disk(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    with app.app_context():
        Backup.update(disk_gb=50).where(Backup.id == backup["id"]).execute()
    refused = api(client, "POST", f"/projects/{project}/instances", owner,
                  json={"name": "tiny", "plan_id": "small", "backup_id": backup["id"]})
    assert refused.status_code == 400
    assert (refused.get_json()["error"]["code"],
            refused.get_json()["error"]["details"]["field"]) == ("plan_too_small", "plan_id")


def test_one_source_only_and_the_backup_must_be_of_the_project(app, client, owner, outsider,  # noqa: PLR0917
                                                               project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    both = api(client, "POST", f"/projects/{project}/instances", owner,
               json={"name": "two", "plan_id": "small", "backup_id": backup["id"],
                     "image_id": catalog["image"]})
    assert both.status_code == 400 and both.get_json()["error"]["details"]["field"] == "image_id"
    theirs = default_project(client, outsider)
    foreign = api(client, "POST", f"/projects/{theirs}/instances", outsider,
                  json={"name": "stolen", "plan_id": "small", "backup_id": backup["id"]})
    assert foreign.status_code == 400
    assert foreign.get_json()["error"]["code"] == "backup_not_found"
    # ... and another tenant's backup ids answer 404 under their own project.
    assert api(client, "GET", f"/projects/{theirs}/backups/{backup['id']}",
               outsider).status_code == 404


def test_an_engine_of_another_kind_cannot_take_the_backup(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    with app.app_context():
        other = make_node("docker-node", engine="docker", endpoint="unix:///nonexistent.sock")
        Backup.update(node=other.id).where(Backup.id == backup["id"]).execute()
    refused = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/restore",
                  owner)
    error = refused.get_json()["error"]
    assert (refused.status_code, error["code"]) == (409, "engine_mismatch")
    assert error["details"] == {"backup_engine": "docker", "engine": "fake"}


def test_the_limit_counts_kept_backups_and_refuses_before_the_engine_is_asked(  # noqa: PLR0917
        app, client, owner, admin, project, catalog, monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    owner_id = api(client, "GET", "/auth/me", owner).get_json()["id"]
    api(client, "PUT", f"/admin/users/{owner_id}/limits", admin,
        json={"resource": "backups", "value": 2})
    back_up(app, client, owner, project, instance["id"])
    back_up(app, client, owner, project, instance["id"])
    asked: list[str] = []
    real = FakeDriver.capabilities
    monkeypatch.setattr(FakeDriver, "capabilities",
                        lambda self: asked.append("capabilities") or real(self))
    monkeypatch.setattr(FakeDriver, "export_archive",
                        lambda self, ref, out: asked.append("export"))
    refused = api(client, "POST", base(project, instance["id"]), owner, json={})
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {"resource": "backups", "limit": 2, "used": 2, "requested": 1}
    assert asked == []
    with app.app_context():
        assert Backup.select().count() == 2
        assert Job.select().where(Job.type == "backup.create").count() == 2
    # A final backup counts too, and is refused the same way (nothing is deleted).
    refused = api(client, "DELETE",
                  f"/projects/{project}/instances/{instance['id']}?final_backup=true", owner)
    assert refused.status_code == 403 and asked == []


def test_an_engine_without_archives_says_so_and_nothing_is_queued(app, client, owner, project,  # noqa: PLR0917
                                                                  catalog, monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    monkeypatch.setattr(FakeDriver, "capabilities", lambda self: Capabilities(exec=True))
    for method, path in (("POST", base(project, instance["id"])),
                         ("POST", f"{base(project, instance['id'])}/{backup['id']}/restore")):
        response = api(client, method, path, owner, json={})
        error = response.get_json()["error"]
        assert (response.status_code, error["code"], error["details"]["capability"]) == (
            409, "unsupported", "backups")
    with app.app_context():
        assert Job.select().where(Job.type.startswith("backup.")).count() == 1


def test_one_operation_at_a_time_per_instance(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    assert api(client, "POST", base(project, instance["id"]), owner, json={}).status_code == 202
    for method, path in (
            ("POST", base(project, instance["id"])),
            ("POST", f"{base(project, instance['id'])}/{backup['id']}/restore"),
            ("POST", f"/projects/{project}/instances/{instance['id']}/reboot")):
        response = api(client, method, path, owner, json={})
        assert response.status_code == 409, (path, response.get_json())
        assert response.get_json()["error"]["code"] == "operation_in_progress"
    run_jobs(app)
    with app.app_context():
        # The refused backup left no row behind (its transaction rolled back).
        assert Backup.select().count() == 2


def test_deleting_removes_the_archive_and_waits_for_jobs_that_read_it(app, client, owner,
                                                                      project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    one = f"{base(project, instance['id'])}/{backup['id']}"
    api(client, "POST", one + "/restore", owner)
    busy = api(client, "DELETE", one, owner)
    assert (busy.status_code, busy.get_json()["error"]["code"]) == (409, "backup_in_use")
    run_jobs(app)
    taking = api(client, "POST", base(project, instance["id"]), owner, json={}).get_json()
    creating = api(client, "DELETE", f"{base(project, instance['id'])}/"
                                     f"{taking['backup']['id']}", owner)
    assert creating.status_code == 409 and creating.get_json()["error"]["code"] == "invalid_state"
    run_jobs(app)
    assert api(client, "DELETE", one, owner).status_code == 204
    assert not (store(app) / f"{backup['id']}.fake.archive").exists()
    assert api(client, "GET", one, owner).status_code == 404
    assert events_of(client, owner, "backup.deleted")[0]["data"]["backup"]["id"] == backup["id"]
    with app.app_context():
        row = Backup.get_by_id(backup["id"])
        assert (row.status, row.deleted_at is not None) == ("deleted", True)


def test_a_viewer_lists_but_cannot_back_up_and_a_read_key_cannot_either(app, client, owner,  # noqa: PLR0917
                                                                        viewer, project,
                                                                        catalog):
    instance = create_instance(app, client, owner, project, catalog)
    assert api(client, "GET", base(project, instance["id"]), viewer).status_code == 200
    denied = api(client, "POST", base(project, instance["id"]), viewer, json={})
    assert denied.status_code == 403 and denied.get_json()["error"]["code"] == "role_denied"
    secret, _ = create_key(client, owner, scopes=["instances:read", "instances:write"])
    scoped = api(client, "POST", base(project, instance["id"]), key_auth(secret), json={})
    assert scoped.status_code == 403 and scoped.get_json()["error"]["code"] == "scope_denied"


def test_an_engine_failure_keeps_nothing_and_says_why(app, client, owner, project, catalog,  # noqa: PLR0917
                                                      monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)

    def half_then_fail(self, ref, out):
        out.write(b"half an archive")
        raise DriverError("the disk could not be read", permanent=True)

    monkeypatch.setattr(FakeDriver, "export_archive", half_then_fail)
    api(client, "POST", base(project, instance["id"]), owner, json={})
    run_jobs(app)
    backup = api(client, "GET", base(project, instance["id"]), owner).get_json()["data"][0]
    assert backup["status"] == "failed" and "could not be read" in backup["error"]
    assert list(store(app).iterdir()) == []
    failed = events_of(client, owner, "backup.failed")[0]["data"]
    assert failed["backup"]["id"] == backup["id"] and "could not be read" in failed["error"]
    assert api(client, "GET", f"/projects/{project}/instances/{instance['id']}",
               owner).get_json()["status"] == "running"


def test_a_store_that_cannot_be_written_fails_the_backup_with_the_reason(make_app, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store should be")
    app = make_app(BACKUP_DIR=str(blocked))
    client = app.test_client()
    make_user(app, "owner@example.test")
    owner = signed_in(client, "owner@example.test")
    project = default_project(client, owner)
    instance = create_instance(app, client, owner, project, fake_catalog(app))
    api(client, "POST", base(project, instance["id"]), owner, json={})
    run_jobs(app)
    job = api(client, "GET", f"/projects/{project}/jobs", owner).get_json()["data"][0]
    assert (job["type"], job["status"], job["error_code"]) == (
        "backup.create", "failed", "backup_store_unavailable")
    backup = api(client, "GET", base(project, instance["id"]), owner).get_json()["data"][0]
    assert backup["status"] == "failed" and "cannot be written" in backup["error"]


def test_a_changed_archive_is_refused_and_the_instance_is_untouched(app, client, owner,
                                                                    project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    write(instance["id"], "/root/notes", "original")
    backup = back_up(app, client, owner, project, instance["id"])
    write(instance["id"], "/root/notes", "current")
    archive = store(app) / f"{backup['id']}.fake.archive"
    archive.write_bytes(archive.read_bytes().replace(b"original", b"tampered"))
    api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/restore", owner)
    run_jobs(app)
    job = api(client, "GET", f"/projects/{project}/jobs", owner).get_json()["data"][0]
    assert (job["status"], job["error_code"]) == ("failed", "backup_corrupt")
    assert read(instance["id"], "/root/notes") == "current"
    assert api(client, "GET", f"{base(project, instance['id'])}/{backup['id']}",
               owner).get_json()["status"] == "failed"


def test_a_job_run_again_after_a_crash_writes_one_whole_archive(app, client, owner, project,
                                                                catalog):
    """A kill -9 mid-write leaves `<name>.part`; the job, due again at start-up, writes
    the archive anew and the part is gone."""
    instance = create_instance(app, client, owner, project, catalog)
    accepted = api(client, "POST", base(project, instance["id"]), owner, json={}).get_json()
    name = f"{accepted['backup']['id']}.fake.archive"
    store(app).mkdir(parents=True, exist_ok=True)
    (store(app) / (name + ".part")).write_bytes(b"what the killed process had written")
    run_jobs(app)
    assert sorted(os.listdir(store(app))) == [name]
    with app.app_context():
        row = Backup.get_by_id(accepted["backup"]["id"])
        assert row.status == "available"
        assert hashlib.sha256((store(app) / name).read_bytes()).hexdigest() == row.sha256


def test_an_idempotent_retry_takes_one_backup(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    headers = {**owner, "Idempotency-Key": "backup-once-1"}
    first = api(client, "POST", base(project, instance["id"]), headers, json={"name": "one"})
    again = api(client, "POST", base(project, instance["id"]), headers, json={"name": "one"})
    assert first.status_code == again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.get_json()["backup"]["id"] == again.get_json()["backup"]["id"]
    with app.app_context():
        assert Backup.select().count() == 1


def test_backups_of_a_deleted_instance_stay_listed_on_the_project(app, client, owner, project,
                                                                  catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    api(client, "DELETE", f"/projects/{project}/instances/{instance['id']}", owner)
    run_jobs(app)
    listed = api(client, "GET", f"/projects/{project}/backups", owner).get_json()["data"]
    assert [(b["id"], b["instance_id"], b["kind"]) for b in listed] == [
        (backup["id"], instance["id"], "manual")]
    assert api(client, "GET", base(project, instance["id"]), owner).status_code == 404
    with app.app_context():
        assert backup_rows.kept_count(Backup.get_by_id(backup["id"]).project.created_by_id) == 1
