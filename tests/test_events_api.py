"""The event outbox: state changes record events in their own transaction; callers see
their account's events and those of their projects, and the catalog of types."""

from __future__ import annotations

import pytest

from appliance.db import database
from appliance.models import Event
from appliance.services.events import outbox
from tests.factories import (
    add_member,
    api,
    create_instance,
    create_key,
    create_project,
    default_project,
    fake_catalog,
    key_auth,
    make_user,
    signed_in,
)

DESIGN_TYPES = {
    "instance.created", "instance.ready", "instance.started", "instance.stopped",
    "instance.resized", "instance.rebuilt", "instance.deleted", "instance.failed",
    "backup.created", "backup.restored", "job.succeeded", "job.failed",
    "billing.low_balance", "billing.suspended", "billing.credited", "invoice.issued",
    "api_key.created", "api_key.revoked", "member.added", "member.removed", "webhook.test",
}


@pytest.fixture
def team(app, client, owner, outsider):
    """The owner and the outsider of tests/conftest.py, and member@example.test, who
    belongs to no project until a test adds them (so the events they see are the test's)."""
    make_user(app, "member@example.test")
    return {"owner": owner, "member": signed_in(client, "member@example.test"),
            "outsider": outsider}


def _events(client, headers, **query) -> list[dict]:
    response = api(client, "GET", "/events", headers, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_the_catalog_covers_every_design_type_with_an_example(client, team):
    listed = api(client, "GET", "/event-types", team["owner"]).get_json()["data"]
    names = {item["type"] for item in listed}
    assert DESIGN_TYPES <= names
    assert all(item["description"] and isinstance(item["example"], dict) for item in listed)


def test_key_events_name_the_key_but_never_its_secret(client, team):
    secret, key = create_key(client, team["owner"], name="ci")
    api(client, "DELETE", f"/api-keys/{key['id']}", team["owner"])
    found = _events(client, team["owner"])
    assert [e["type"] for e in found[:2]] == ["api_key.revoked", "api_key.created"]
    created = found[1]
    assert created["data"]["api_key"]["id"] == key["id"]
    assert created["data"]["api_key"]["name"] == "ci"
    assert created["user_id"] and created["project_id"] is None
    raw = api(client, "GET", "/events", team["owner"]).get_data(as_text=True)
    assert secret not in raw and secret[-8:] not in raw and key["prefix"] not in raw
    assert _events(client, team["outsider"]) == []


def test_members_see_project_events_and_outsiders_do_not(client, team):
    project = create_project(client, team["owner"], "Lab")
    add_member(client, team["owner"], project, "member@example.test", "viewer")
    seen = _events(client, team["member"], project_id=project)
    assert [e["type"] for e in seen] == ["member.added"]
    assert seen[0]["data"]["role"] == "viewer" and seen[0]["project_id"] == project
    assert [e["type"] for e in _events(client, team["owner"], type="member.added")] == [
        "member.added"]
    assert _events(client, team["outsider"]) == []
    response = api(client, "GET", "/events", team["outsider"],
                   query_string={"project_id": project})
    assert response.status_code == 404
    # Removed, the member still sees the events about them, and no other of the project.
    member_id = seen[0]["user_id"]
    api(client, "DELETE", f"/projects/{project}/members/{member_id}", team["owner"])
    api(client, "PATCH", f"/projects/{project}", team["owner"], json={"name": "Later"})
    add_member(client, team["owner"], project, "outsider@example.test", "viewer")
    assert [e["type"] for e in _events(client, team["member"])] == ["member.removed",
                                                                     "member.added"]


def test_instance_work_records_instance_and_job_events(app, client, team):
    catalog = fake_catalog(app)
    project = default_project(client, team["owner"])
    instance = create_instance(app, client, team["owner"], project, catalog)
    types = [e["type"] for e in _events(client, team["owner"], project_id=project)]
    assert types[:3] == ["job.succeeded", "instance.ready", "instance.created"]
    ready = _events(client, team["owner"], type="instance.ready")[0]
    assert ready["data"]["instance"]["id"] == instance["id"]
    assert ready["data"]["instance"]["status"] == "running"
    job = _events(client, team["owner"], type="job.succeeded")[0]["data"]["job"]
    assert job["type"] == "instance.create" and job["instance_id"] == instance["id"]


def test_filters_are_checked(client, team):
    response = api(client, "GET", "/events", team["owner"], query_string={"type": "nope"})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "type"


def test_a_key_needs_webhooks_read_and_sees_only_its_project(client, team):
    project = create_project(client, team["owner"], "Lab")
    add_member(client, team["owner"], project, "member@example.test", "viewer")
    narrow, _ = create_key(client, team["owner"], scopes=["instances:read"])
    assert api(client, "GET", "/events", key_auth(narrow)).status_code == 403
    scoped, _ = create_key(client, team["owner"], scopes=["webhooks:read"],
                           project_id=project)
    seen = _events(client, key_auth(scoped))
    assert seen and {e["project_id"] for e in seen} == {project}


def test_an_event_rolls_back_with_its_change(app):
    with app.app_context():
        with pytest.raises(RuntimeError), database.atomic():
            outbox.emit("webhook.test", data={"message": "x"})
            raise RuntimeError("the change failed")
        assert Event.select().count() == 0
        with pytest.raises(ValueError):
            outbox.emit("no.such.type", data={})


def test_event_ids_sort_in_the_order_they_happened(app):
    with app.app_context():
        first = outbox.emit("webhook.test", data={})
        second = outbox.emit("webhook.test", data={})
    assert first.id < second.id
