"""Templates over the JSON API on the simulated engine: save a backup as a template,
list, rename, make instances from it after the backup and its instance are gone, delete;
the store's files and checksums, the `template_storage_gb` limit, metering, events,
tenants, and what the start-up check finds and repairs.

The same path on real Incus and Docker is tests/test_templates_engines.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from appliance import config
from appliance.drivers.fake import FakeDriver
from appliance.models import Job, Template, UsageRecord
from appliance.services.billing import metering
from appliance.services.instances import backup_check
from tests.factories import api, create_instance, default_project, run_jobs
from tests.test_backups_api import back_up, base, events_of, read, ref_of, write


@pytest.fixture
def project(owner_project):
    return owner_project


def store(app) -> Path:
    return Path(app.config["APPLIANCE"]["BACKUP_DIR"])


def save(app, client, headers, project, instance_id, backup_id,  # noqa: PLR0917
         name="golden") -> dict:
    response = api(client, "POST", f"{base(project, instance_id)}/{backup_id}/template",
                   headers, json={"name": name})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert (body["template"]["status"], body["job"]["type"]) == ("creating", "template.create")
    run_jobs(app)
    return api(client, "GET", f"/projects/{project}/templates/{body['template']['id']}",
               headers).get_json()


def test_a_template_outlives_its_backup_and_instance_and_makes_instances(app, client, owner,
                                                                         project, catalog):
    source = create_instance(app, client, owner, project, catalog, name="source")
    write(source["id"], "/srv/app.conf", "tuned once")
    backup = back_up(app, client, owner, project, source["id"])
    template = save(app, client, owner, project, source["id"], backup["id"])
    assert template["id"].startswith("tpl_")
    assert (template["status"], template["engine"], template["source_instance_id"],
            template["source_instance_name"], template["source_backup_id"]) == (
        "available", "fake", source["id"], "source", backup["id"])
    archive = store(app) / "templates" / f"{template['id']}.fake.archive"
    assert archive.stat().st_size == template["size_bytes"] == backup["size_bytes"]
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == template["sha256"]
    assert template["disk_gb"] == backup["disk_gb"] and template["size_gb"] == 1
    created = events_of(client, owner, "template.created")[0]["data"]["template"]
    assert (created["id"], created["sha256"]) == (template["id"], template["sha256"])

    api(client, "DELETE", f"/projects/{project}/instances/{source['id']}", owner)
    run_jobs(app)
    assert api(client, "DELETE", f"/projects/{project}/backups/{backup['id']}",
               owner).status_code == 204
    assert archive.exists()

    made = []
    for name in ("copy-1", "copy-2"):
        response = api(client, "POST", f"/projects/{project}/instances", owner,
                       json={"name": name, "plan_id": "small", "template_id": template["id"]})
        assert response.status_code == 202, response.get_json()
        made.append(response.get_json()["instance"]["id"])
    run_jobs(app)
    for instance_id in made:
        shown = api(client, "GET", f"/projects/{project}/instances/{instance_id}",
                    owner).get_json()
        assert shown["status"] == "running" and shown["image"]["id"] == catalog["image"]
        assert read(instance_id, "/srv/app.conf") == "tuned once"
    listed = api(client, "GET", f"/projects/{project}/templates", owner).get_json()["data"]
    assert [row["id"] for row in listed] == [template["id"]]
    assert listed[0]["source_instance_id"] == source["id"]  # deleted, still named

    for instance_id in made:
        api(client, "DELETE", f"/projects/{project}/instances/{instance_id}", owner)
    run_jobs(app)
    assert api(client, "DELETE", f"/projects/{project}/templates/{template['id']}",
               owner).status_code == 204
    assert not archive.exists()
    assert api(client, "GET", f"/projects/{project}/templates/{template['id']}",
               owner).status_code == 404
    assert events_of(client, owner, "template.deleted")[0]["data"]["template"]["id"] == \
        template["id"]
    assert [p for p in store(app).rglob("*") if p.is_file()] == []


def test_it_can_be_renamed_and_a_name_is_needed(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    template = save(app, client, owner, project, instance["id"], backup["id"])
    one = f"/projects/{project}/templates/{template['id']}"
    renamed = api(client, "PATCH", one, owner, json={"name": "web, " + "x" * 58})
    assert renamed.status_code == 200 and renamed.get_json()["name"] == "web, " + "x" * 58
    for bad in ({"name": ""}, {"name": "   "}, {"name": "x" * 65}, {}):
        refused = api(client, "PATCH", one, owner, json=bad)
        assert refused.status_code == 400, bad
        assert refused.get_json()["error"]["details"]["field"] == "name"


def test_deleting_one_an_instance_is_made_from_is_refused_until_it_is_made(app, client,
                                                                          owner, project,
                                                                          catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    template = save(app, client, owner, project, instance["id"], backup["id"])
    api(client, "POST", f"/projects/{project}/instances", owner,
        json={"name": "from-tpl", "plan_id": "small", "template_id": template["id"]})
    busy = api(client, "DELETE", f"/projects/{project}/templates/{template['id']}", owner)
    assert (busy.status_code, busy.get_json()["error"]["code"]) == (409, "template_in_use")
    run_jobs(app)
    assert api(client, "DELETE", f"/projects/{project}/templates/{template['id']}",
               owner).status_code == 204
    gone = api(client, "POST", f"/projects/{project}/instances", owner,
               json={"name": "late", "plan_id": "small", "template_id": template["id"]})
    assert gone.status_code == 400 and gone.get_json()["error"]["code"] == "template_not_found"


def test_one_being_made_cannot_be_used_or_deleted(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    accepted = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/template",
                   owner, json={"name": "soon"}).get_json()
    template_id = accepted["template"]["id"]
    used = api(client, "POST", f"/projects/{project}/instances", owner,
               json={"name": "early", "plan_id": "small", "template_id": template_id})
    assert (used.status_code, used.get_json()["error"]["code"]) == (409, "invalid_state")
    deleted = api(client, "DELETE", f"/projects/{project}/templates/{template_id}", owner)
    assert (deleted.status_code, deleted.get_json()["error"]["code"]) == (409, "invalid_state")
    # The backup it is copied from cannot go away meanwhile.
    held = api(client, "DELETE", f"/projects/{project}/backups/{backup['id']}", owner)
    assert (held.status_code, held.get_json()["error"]["code"]) == (409, "backup_in_use")
    run_jobs(app)
    assert api(client, "GET", f"/projects/{project}/backups/{backup['id']}",
               owner).get_json()["status"] == "available"


def test_the_storage_limit_refuses_before_anything_is_copied(app, client, owner, admin,  # noqa: PLR0917
                                                             project, catalog, monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    owner_id = api(client, "GET", "/auth/me", owner).get_json()["id"]
    api(client, "PUT", f"/admin/users/{owner_id}/limits", admin,
        json={"resource": "template_storage_gb", "value": 2})
    save(app, client, owner, project, instance["id"], backup["id"], "one")
    save(app, client, owner, project, instance["id"], backup["id"], "two")
    asked: list[str] = []
    monkeypatch.setattr(FakeDriver, "capabilities", lambda self: asked.append("engine"))
    refused = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/template",
                  owner, json={"name": "three"})
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {"resource": "template_storage_gb", "limit": 2, "used": 2,
                                "requested": 1}
    assert asked == []
    with app.app_context():
        assert Template.select().count() == 2
        assert Job.select().where(Job.type == "template.create").count() == 2
    assert len(list((store(app) / "templates").iterdir())) == 2
    limits = api(client, "GET", "/account/limits", owner).get_json()["data"]
    assert {row["resource"]: row["used"] for row in limits}["template_storage_gb"] == 2


def test_every_route_is_404_for_another_tenant(app, client, owner, outsider, project,  # noqa: PLR0917
                                               catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    template = save(app, client, owner, project, instance["id"], backup["id"])
    theirs = default_project(client, outsider)
    for project_id in (project, theirs):
        for method, path, body in (
                ("POST", f"{base(project_id, instance['id'])}/{backup['id']}/template",
                 {"name": "stolen"}),
                ("GET", f"/projects/{project_id}/templates/{template['id']}", None),
                ("PATCH", f"/projects/{project_id}/templates/{template['id']}",
                 {"name": "stolen"}),
                ("DELETE", f"/projects/{project_id}/templates/{template['id']}", None)):
            response = api(client, method, path, outsider, json=body)
            assert response.status_code == 404, (method, path, response.get_json())
    assert api(client, "GET", f"/projects/{project}/templates", outsider).status_code == 404
    assert api(client, "GET", f"/projects/{theirs}/templates", outsider).get_json()["data"] == []
    foreign = api(client, "POST", f"/projects/{theirs}/instances", outsider,
                  json={"name": "stolen", "plan_id": "small", "template_id": template["id"]})
    assert (foreign.status_code, foreign.get_json()["error"]["code"]) == (
        400, "template_not_found")
    assert api(client, "GET", f"/projects/{project}/templates/{template['id']}",
               owner).get_json()["name"] == "golden"


def test_template_storage_is_metered_per_gb_hour_at_its_own_price(app, client, owner, project,  # noqa: PLR0917
                                                                  catalog, monkeypatch):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    template = save(app, client, owner, project, instance["id"], backup["id"])
    with app.app_context():
        monkeypatch.setitem(config.active(), "BILLING_TEMPLATE_GB_MONTH", "744")  # 1 an hour
        Template.update(size_gb=3, created_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC)).where(
            Template.id == template["id"]).execute()
        metering.tick(dt.datetime(2025, 3, 1, 2, 30, tzinfo=dt.UTC))
        rows = list(UsageRecord.select().where(UsageRecord.subject_id == template["id"])
                    .order_by(UsageRecord.hour))
        assert [(r.resource, r.sku, r.quantity, r.amount) for r in rows] == [
            ("template", "template-gb", 3, 3)] * 3
        assert metering.hourly_rate(rows[0].user_id,
                                    dt.datetime(2025, 3, 1, 3, tzinfo=dt.UTC)) >= 3
        monkeypatch.setitem(config.active(), "BILLING_TEMPLATE_GB_MONTH", "")
        assert metering.template_gb_month_price() == metering.backup_gb_month_price() == 5


def test_a_failed_copy_keeps_nothing_and_says_why(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    archive = store(app) / f"{backup['id']}.fake.archive"
    archive.write_bytes(archive.read_bytes() + b" changed")
    api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/template", owner,
        json={"name": "broken"})
    run_jobs(app)
    template = api(client, "GET", f"/projects/{project}/templates", owner).get_json()["data"][0]
    assert template["status"] == "failed" and "checksum" in template["error"]
    assert list((store(app) / "templates").glob("*")) == [] if (
        store(app) / "templates").exists() else True
    failed = events_of(client, owner, "template.failed")[0]["data"]
    assert failed["template"]["id"] == template["id"]
    job = api(client, "GET", f"/projects/{project}/jobs", owner).get_json()["data"][0]
    assert (job["type"], job["status"]) == ("template.create", "failed")
    notes = api(client, "GET", "/notifications", owner).get_json()["data"]
    assert any(n["title"] == "Saving a template failed" for n in notes)


def test_the_start_up_check_finds_orphans_missing_archives_and_stuck_jobs(app, client, owner,
                                                                          project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    kept = save(app, client, owner, project, instance["id"], backup["id"], "kept")
    lost = save(app, client, owner, project, instance["id"], backup["id"], "lost")
    folder = store(app) / "templates"
    (folder / f"{lost['id']}.fake.archive").unlink()
    stranger = folder / "tpl_stranger0000.fake.archive"
    stranger.write_bytes(b"no row knows me")
    # A job killed mid-copy: the row says creating, the job is gone (failed elsewhere).
    stuck = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/template",
                owner, json={"name": "stuck"}).get_json()["template"]
    (folder / f"{stuck['id']}.fake.archive.part").write_bytes(b"half")
    with app.app_context():
        Job.update(status="failed").where(Job.type == "template.create",
                                          Job.status == "queued").execute()
        looked = backup_check.check(repair=False)
        assert set(looked.orphan_files) == {f"templates/{stranger.name}",
                                            f"templates/{stuck['id']}.fake.archive.part"}
        assert looked.missing_archives == [lost["id"]]
        assert stuck["id"] in looked.settled  # (and its backup, left in use by no job)
        backup_check.check()
        again = backup_check.check(repair=False)
        assert again.clean, again.lines()
        assert {t.id: t.status for t in Template.select()} == {
            kept["id"]: "available", lost["id"]: "failed", stuck["id"]: "failed"}
    assert sorted(p.name for p in folder.iterdir()) == [f"{kept['id']}.fake.archive"]


def test_a_job_run_again_after_a_crash_makes_one_whole_archive(app, client, owner, project,
                                                               catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup = back_up(app, client, owner, project, instance["id"])
    accepted = api(client, "POST", f"{base(project, instance['id'])}/{backup['id']}/template",
                   owner, json={"name": "again"}).get_json()
    name = f"{accepted['template']['id']}.fake.archive"
    folder = store(app) / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (name + ".part")).write_bytes(b"what the killed process had written")
    with app.app_context():
        assert backup_check.check().orphan_files == []  # its job will run again: kept
    run_jobs(app)
    assert sorted(p.name for p in folder.iterdir()) == [name]
    template = api(client, "GET", f"/projects/{project}/templates/{accepted['template']['id']}",
                   owner).get_json()
    assert template["status"] == "available"
    assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == template["sha256"]
    assert ref_of(instance["id"])
