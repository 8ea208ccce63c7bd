"""The administrators' bell: new limit requests, nodes turning unhealthy, failed jobs and
(opt-in) new signups, each made from its event like every other notification."""

from __future__ import annotations

import json
import re

import pytest

from appliance.drivers import fake
from appliance.drivers.base import DriverError
from appliance.models import Event, Node
from appliance.scheduler import run_task
from appliance.services import settings
from appliance.services.instances import lifecycle
from tests.factories import PASSWORD, api, create_instance, make_user, run_jobs, signed_in


@pytest.fixture
def second_admin(app, client, admin_user):
    make_user(app, "root2@example.test", role="admin")
    return signed_in(client, "root2@example.test")


def _notifications(client, headers) -> list[dict]:
    response = api(client, "GET", "/notifications", headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_every_administrator_is_told_of_a_new_limit_request(  # noqa: PLR0917
        app, client, owner, owner_user, admin, second_admin, outsider):
    asked = api(client, "POST", "/account/limit-requests", owner,
                json={"resource": "instances", "requested": 12, "reason": "A lab"})
    assert asked.status_code == 201, asked.get_json()
    for headers in (admin, second_admin):
        found = [n for n in _notifications(client, headers)
                 if n["type"] == "limit_request.created"]
        assert len(found) == 1
        assert found[0]["title"] == "owner@example.test asks for more instances"
        assert "12" in found[0]["body"] and "A lab" in found[0]["body"]
        assert found[0]["link"] == "/admin/limits?status=pending"
    assert _notifications(client, owner) == []
    assert _notifications(client, outsider) == []
    with app.app_context():
        events = list(Event.select().where(Event.type == "limit_request.created"))
    assert len(events) == 2  # one account event per administrator
    assert json.loads(events[0].data)["limit_request"]["user_id"] == owner_user.id


def test_a_node_turning_unhealthy_is_told_once(app, client, admin, catalog):
    run_task(app, "check_nodes")
    assert _notifications(client, admin) == []  # healthy, and it stays so
    with app.app_context():
        Node.update(options=json.dumps({"down": "true"})).where(
            Node.id == catalog["node"]).execute()
    run_task(app, "check_nodes")
    run_task(app, "check_nodes")  # still down: nothing new
    found = _notifications(client, admin)
    assert [n["type"] for n in found] == ["node.unhealthy"]
    assert found[0]["title"] == "Node fake is unhealthy"
    assert "simulated engine is down" in found[0]["body"]
    assert found[0]["link"] == f"/admin/nodes/{catalog['node']}"
    with app.app_context():
        Node.update(options="{}").where(Node.id == catalog["node"]).execute()
    run_task(app, "check_nodes")  # healthy again
    with app.app_context():
        Node.update(options=json.dumps({"down": "true"})).where(
            Node.id == catalog["node"]).execute()
    run_task(app, "check_nodes")
    assert [n["type"] for n in _notifications(client, admin)] == ["node.unhealthy"] * 2


def test_a_failed_job_is_told_to_the_administrators_with_their_link(  # noqa: PLR0917
        app, client, owner, owner_project, admin, catalog, monkeypatch):
    made = create_instance(app, client, owner, owner_project, catalog)

    def broken(self, ref, graceful=True, timeout=30):
        raise DriverError("the disk is on fire", permanent=True)

    monkeypatch.setattr(fake.FakeDriver, "stop", broken)
    assert api(client, "POST", f"/projects/{owner_project}/instances/{made['id']}/stop",
               owner).status_code == 202
    run_jobs(app)
    told = [n for n in _notifications(client, admin) if n["type"] == "job.failed"]
    assert len(told) == 1
    assert told[0]["title"] == "Stop failed (owner@example.test)"
    assert "the disk is on fire" in told[0]["body"]
    assert told[0]["link"] == "/admin/jobs?status=failed&within_hours=24"
    owners = [n for n in _notifications(client, owner) if n["type"] == "job.failed"]
    assert owners[0]["link"] == f"/projects/{owner_project}/instances/{made['id']}"
    with app.app_context():
        assert lifecycle.current_jobs([made["id"]]) == {}


def test_new_signups_are_told_only_when_the_operator_opts_in(app, client, admin):
    def sign_up(email: str) -> None:
        response = client.post("/api/v1/auth/signup", json={"email": email,
                                                             "password": PASSWORD})
        assert response.status_code == 201, response.get_json()

    sign_up("first@example.test")
    assert [n for n in _notifications(client, admin) if n["type"] == "user.signed_up"] == []
    with app.app_context():
        settings.put("NOTIFY_ADMINS_OF_SIGNUPS", "true")
    sign_up("second@example.test")
    found = [n for n in _notifications(client, admin) if n["type"] == "user.signed_up"]
    assert len(found) == 1 and found[0]["title"] == "second@example.test signed up"
    assert re.fullmatch(r"/admin/users/usr_\w+", found[0]["link"])


def test_the_bell_of_an_administrator_counts_them(app, client, owner, root):
    api(client, "POST", "/account/limit-requests", owner,
        json={"resource": "vcpus", "requested": 40})
    page = root.page("/notifications")
    assert "owner@example.test asks for more vcpus" in page
    assert 'href="/admin/limits?status=pending"' in page
