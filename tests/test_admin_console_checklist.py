"""The first-run checklist on the admin home: each item ticks itself when what it asks
for is done, three starter plans with one click, and local engines found later."""

from __future__ import annotations

import re

import pytest

from appliance import drivers
from appliance.drivers import fake
from appliance.models import AuditLog, Node, Plan
from appliance.services import clock
from appliance.services.instances import nodes
from tests.factories import api

ITEMS = ("plans", "nodes", "mail", "site", "billing", "promo")


def _ticked(page: str) -> dict[str, bool]:
    found = dict(re.findall(r'id="checklist-(\w+)" data-done="(yes|no)"', page))
    return {key: found[key] == "yes" for key in found}


def test_each_item_ticks_itself_and_the_list_goes_when_all_are_done(
        app, client, admin, root, catalog):
    ticked = _ticked(root.page("/admin/"))
    assert list(ticked) == list(ITEMS)
    # The fake catalog brings a plan and a healthy node; nothing else is set up yet.
    assert ticked == {"plans": True, "nodes": True, "mail": False, "site": False,
                      "billing": False, "promo": False}
    assert api(client, "GET", "/admin/overview", admin).get_json()["checklist"] == ticked

    api(client, "PUT", "/admin/settings", admin, json={"smtp_host": "mail.club.test"})
    api(client, "PUT", "/admin/settings", admin, json={"site_name": "Club VPS"})
    assert _ticked(root.page("/admin/"))["site"] is False  # a support address too
    api(client, "PUT", "/admin/settings", admin, json={"support_email": "help@club.test"})
    api(client, "PUT", "/admin/billing/settings", admin, json={"operator_name": "Club e.V."})
    assert _ticked(root.page("/admin/")) == {**dict.fromkeys(ITEMS, True), "promo": False}
    assert api(client, "POST", "/admin/promo-codes", admin,
               json={"code": "welcome", "amount": 500}).status_code == 201
    page = root.page("/admin/")
    assert 'id="checklist"' not in page
    assert api(client, "GET", "/admin/overview", admin).get_json()["checklist"] == dict.fromkeys(
        ITEMS, True)


def test_three_starter_plans_with_one_click(app, client, admin, root):
    assert _ticked(root.page("/admin/"))["plans"] is False
    added = root.post("/admin/checklist/starter-plans")
    assert added.status_code == 302 and added.headers["Location"].startswith("/admin/plans?")
    with app.app_context():
        plans = {plan.slug: plan for plan in Plan.select()}
        assert AuditLog.select().where(AuditLog.action == "plan.created").count() == 3
    assert sorted(plans) == ["large", "medium", "small"]
    assert (plans["small"].vcpus, plans["medium"].vcpus, plans["large"].vcpus) == (1, 2, 4)
    assert all(plan.price_monthly_cap > 0 and plan.active for plan in plans.values())
    assert _ticked(root.page("/admin/"))["plans"] is True
    again = root.post("/admin/checklist/starter-plans")
    assert again.status_code == 409
    assert "exist already" in again.get_data(as_text=True)
    over_api = api(client, "POST", "/admin/plans/starter", admin)
    assert over_api.status_code == 409


def test_the_starter_plans_skip_a_slug_that_is_taken(client, admin, catalog):
    # The fake catalog has "small" and "large" already.
    response = api(client, "POST", "/admin/plans/starter", admin)
    assert response.status_code == 201, response.get_json()
    assert [plan["slug"] for plan in response.get_json()["data"]] == ["medium"]


@pytest.fixture
def local_engines(monkeypatch):
    """Incus and Docker both answering on their local sockets, as simulated engines."""
    real = drivers.connect

    def connect(engine, endpoint, options=None):
        if engine in ("incus", "docker") and endpoint == "":
            return fake.FakeDriver(f"fake://local-{engine}")
        return real(engine, endpoint, options)

    monkeypatch.setattr(drivers, "connect", connect)


def test_the_first_start_registers_every_local_engine_that_answers(app, local_engines):
    with app.app_context():
        made = nodes.register_local_engines()
        assert sorted(node.name for node in made) == ["local-docker", "local-incus"]
        assert all(node.health == "healthy" for node in made)
        assert nodes.register_local_engines() == []  # nodes exist: nothing more


def test_looking_for_local_engines_registers_the_missing_one(app, client, admin, root,
                                                            local_engines):
    with app.app_context():
        Node.create(id="node_incus", name="local-incus", engine="incus", endpoint="",
                    options="{}", capacity_vcpus=2, capacity_memory_mb=2048,
                    capacity_disk_gb=20, health="healthy", created_at=clock.now(),
                    updated_at=clock.now())
    response = root.post("/admin/checklist/local-engines")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/nodes?notice=Registered+local-docker")
    with app.app_context():
        assert sorted(node.name for node in Node.select()) == ["local-docker", "local-incus"]
    again = api(client, "POST", "/admin/nodes/local", admin)
    assert again.status_code == 200 and again.get_json()["data"] == []
    nothing = root.post("/admin/checklist/local-engines", follow=True)
    assert "No other local engine answered." in nothing.get_data(as_text=True)


def test_non_admins_get_403_on_the_checklist_actions(client, owner, ada):
    assert api(client, "POST", "/admin/plans/starter", owner).status_code == 403
    assert api(client, "POST", "/admin/nodes/local", owner).status_code == 403
    assert ada.post("/admin/checklist/starter-plans").status_code == 403
    assert ada.post("/admin/checklist/local-engines").status_code == 403
