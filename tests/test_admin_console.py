"""The operator's console over the JSON API: every account's instances, found and acted on
by an administrator as their owners could, audited with both identities."""

from __future__ import annotations

import pytest

from appliance.models import AuditLog, Instance
from appliance.services import clock
from tests.factories import (
    api,
    create_instance,
    create_key,
    default_project_of,
    key_auth,
    make_image,
    make_instance,
    make_node,
    make_user,
    run_jobs,
)


def _search(client, admin, query: str = "") -> list[dict]:
    response = api(client, "GET", f"/admin/instances{query}", admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_an_admin_finds_a_customers_instance_by_owner_email_and_engine_name_and_stops_it(  # noqa: PLR0917
        app, client, owner, owner_user, owner_project, admin, admin_user, catalog):
    made = create_instance(app, client, owner, owner_project, catalog, name="web-1")
    engine_name = "ins-" + made["id"].removeprefix("ins_")

    by_email = _search(client, admin, "?q=OWNER@example")
    assert [row["id"] for row in by_email] == [made["id"]]
    found = by_email[0]
    assert found["owner"] == {"id": owner_user.id, "email": "owner@example.test",
                              "display_name": ""}
    assert found["node"]["id"] == catalog["node"] and found["engine_name"] == engine_name
    assert found["project"]["id"] == owner_project
    assert [row["id"] for row in _search(client, admin, f"?q={engine_name}")] == [made["id"]]
    assert _search(client, admin, "?q=nobody@else") == []

    stopped = api(client, "POST", f"/admin/instances/{made['id']}/stop", admin)
    assert stopped.status_code == 202, stopped.get_json()
    assert stopped.get_json()["job"]["type"] == "instance.stop"
    run_jobs(app)
    seen_by_owner = api(client, "GET", f"/projects/{owner_project}/instances/{made['id']}",
                        owner).get_json()
    assert seen_by_owner["status"] == "stopped"

    with app.app_context():
        row = AuditLog.get(AuditLog.action == "instance.stop")
    assert row.actor_id == admin_user.id and row.target_id == made["id"]
    details = api(client, "GET", "/admin/audit-log?action=instance.stop",
                  admin).get_json()["data"][0]["details"]
    assert details == {"as_operator": True, "owner_id": owner_user.id,
                       "owner_email": "owner@example.test"}
    timeline = api(client, "GET", f"/projects/{owner_project}/instances/{made['id']}/events",
                   owner).get_json()["data"]
    assert any("root@example.test, administrator" in event["message"] for event in timeline)


def test_the_customer_routes_still_answer_404_to_an_admin(  # noqa: PLR0917
        app, client, owner, owner_project, admin, catalog):
    made = create_instance(app, client, owner, owner_project, catalog)
    base = f"/projects/{owner_project}/instances"
    for method, path in (("GET", base), ("GET", f"{base}/{made['id']}"),
                         ("POST", f"{base}/{made['id']}/stop"),
                         ("DELETE", f"{base}/{made['id']}")):
        response = api(client, method, path, admin)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"]["code"] == "project_not_found"
    # Through the admin routes the same instance reads, with its owner.
    one = api(client, "GET", f"/admin/instances/{made['id']}", admin)
    assert one.status_code == 200 and one.get_json()["owner"]["email"] == "owner@example.test"
    assert api(client, "GET", "/admin/instances/ins_nothing", admin).status_code == 404


def test_power_actions_keep_the_owners_rules(  # noqa: PLR0917
        app, client, owner, owner_project, admin, catalog):
    made = create_instance(app, client, owner, owner_project, catalog)
    assert api(client, "POST", f"/admin/instances/{made['id']}/stop", admin).status_code == 202
    busy = api(client, "POST", f"/admin/instances/{made['id']}/reboot", admin)
    assert busy.status_code == 409
    assert busy.get_json()["error"]["code"] == "operation_in_progress"
    run_jobs(app)
    wrong = api(client, "POST", f"/admin/instances/{made['id']}/stop", admin)
    assert wrong.status_code == 409 and wrong.get_json()["error"]["code"] == "invalid_state"
    with app.app_context():
        Instance.update(suspended_at=clock.now()).where(Instance.id == made["id"]).execute()
    suspended = api(client, "POST", f"/admin/instances/{made['id']}/start", admin)
    assert suspended.status_code == 402


def test_deleting_needs_the_name_typed_back_and_is_audited_with_the_owner(  # noqa: PLR0917
        app, client, owner, owner_user, owner_project, admin, admin_user, catalog):
    made = create_instance(app, client, owner, owner_project, catalog, name="db-1")
    wrong = api(client, "DELETE", f"/admin/instances/{made['id']}?confirm_name=db-2", admin)
    assert wrong.status_code == 400
    assert wrong.get_json()["error"]["details"]["field"] == "confirm_name"
    missing = api(client, "DELETE", f"/admin/instances/{made['id']}", admin)
    assert missing.status_code == 400
    with app.app_context():
        assert Instance.get_by_id(made["id"]).status == "running"

    gone = api(client, "DELETE", f"/admin/instances/{made['id']}?confirm_name=db-1", admin)
    assert gone.status_code == 202, gone.get_json()
    assert gone.get_json()["instance"]["status"] == "deleting"
    assert gone.get_json()["instance"]["owner"]["id"] == owner_user.id
    run_jobs(app)
    assert api(client, "GET", f"/projects/{owner_project}/instances/{made['id']}",
               owner).status_code == 404
    with app.app_context():
        row = AuditLog.get(AuditLog.action == "instance.delete")
    assert row.actor_id == admin_user.id
    assert f'"owner_id": "{owner_user.id}"' in row.details
    assert [r["id"] for r in _search(client, admin, "?state=deleted")] == [made["id"]]
    assert _search(client, admin) == []


@pytest.fixture
def spread(app, owner_user, catalog):
    """Five instances over two owners, two nodes of two engines, two projects of the
    owner's; one stopped, one suspended, one with an address. Returns their ids by name."""
    other = make_user(app, "zed@example.test")
    with app.app_context():
        docker = make_node("docker-1", engine="docker")
        docker_image = make_image(docker)
        fake_node = make_node("fake-2")
        fake_image = make_image(fake_node)
        mine = default_project_of(owner_user.id)
        theirs = default_project_of(other.id)
        made = {
            "alpha": make_instance(mine, "pln_small", fake_node, fake_image, name="alpha"),
            "bravo": make_instance(mine, "pln_small", docker, docker_image, name="bravo",
                                   status="stopped"),
            "charlie": make_instance(theirs, "pln_small", docker, docker_image,
                                     name="charlie"),
            "delta": make_instance(theirs, "pln_small", fake_node, fake_image, name="delta"),
            "echo": make_instance(theirs, "pln_small", fake_node, fake_image, name="echo"),
        }
        Instance.update(suspended_at=clock.now()).where(
            Instance.id == made["delta"].id).execute()
        Instance.update(ipv4="10.0.3.77", ipv6="fd42::77").where(
            Instance.id == made["echo"].id).execute()
    return {name: row.id for name, row in made.items()} | {
        "docker": docker.id, "fake_node": fake_node.id, "other": other.id,
        "mine": mine.id, "theirs": theirs.id}


@pytest.mark.parametrize(("query", "expected"), [
    ("?engine=docker", {"bravo", "charlie"}),
    ("?state=stopped", {"bravo"}),
    ("?suspended=true", {"delta"}),
    ("?suspended=false", {"alpha", "bravo", "charlie", "echo"}),
    ("?q=10.0.3.77", {"echo"}),
    ("?q=fd42::77", {"echo"}),
    ("?q=zed@", {"charlie", "delta", "echo"}),
    ("?q=ALPH", {"alpha"}),
    ("?engine=fake&q=zed", {"delta", "echo"}),
])
def test_search_and_filters(client, admin, spread, query, expected):
    assert {row["name"] for row in _search(client, admin, query)} == expected


def test_filters_by_node_owner_and_project(client, admin, spread):
    names = lambda query: {row["name"] for row in _search(client, admin, query)}  # noqa: E731
    assert names(f"?node={spread['docker']}") == {"bravo", "charlie"}
    assert names(f"?owner={spread['other']}") == {"charlie", "delta", "echo"}
    assert names(f"?project={spread['mine']}") == {"alpha", "bravo"}
    assert names(f"?q={spread['alpha'][:10]}") == {"alpha"}
    bad = api(client, "GET", "/admin/instances?state=sleeping", admin)
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "state"


def test_the_list_pages_with_cursors_newest_first(app, client, admin, spread):
    seen, cursor = [], None
    while True:
        body = api(client, "GET", "/admin/instances?limit=2" + (f"&cursor={cursor}" if cursor
                                                                 else ""), admin).get_json()
        assert len(body["data"]) <= 2 and body["page"]["limit"] == 2
        seen += [row["name"] for row in body["data"]]
        cursor = body["page"]["next_cursor"]
        assert body["page"]["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert sorted(seen) == ["alpha", "bravo", "charlie", "delta", "echo"]
    assert len(seen) == len(set(seen))


ADMIN_INSTANCE_ROUTES = [
    ("GET", "/admin/instances"),
    ("GET", "/admin/instances/{id}"),
    ("POST", "/admin/instances/{id}/start"),
    ("POST", "/admin/instances/{id}/stop"),
    ("POST", "/admin/instances/{id}/shutdown"),
    ("POST", "/admin/instances/{id}/reboot"),
    ("POST", "/admin/instances/{id}/reset"),
    ("DELETE", "/admin/instances/{id}?confirm_name=web-1"),
]


def test_non_admins_get_403_on_every_admin_instance_route(
        app, client, owner, owner_project, catalog):
    made = create_instance(app, client, owner, owner_project, catalog, name="web-1")
    for method, path in ADMIN_INSTANCE_ROUTES:
        response = api(client, method, path.format(id=made["id"]), owner)
        assert response.status_code == 403, (method, path)
        assert response.get_json()["error"]["code"] == "admin_only"
    with app.app_context():
        assert Instance.get_by_id(made["id"]).status == "running"


def test_an_admins_key_needs_the_admin_scope_and_the_actions_scope(  # noqa: PLR0917
        app, client, owner, owner_project, admin, catalog):
    made = create_instance(app, client, owner, owner_project, catalog)
    reader, _ = create_key(client, admin, ["instances:read", "instances:write"])
    refused = api(client, "GET", "/admin/instances", key_auth(reader))
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "scope_denied"
    admin_only, _ = create_key(client, admin, ["admin"])
    assert api(client, "GET", "/admin/instances", key_auth(admin_only)).status_code == 200
    no_write = api(client, "POST", f"/admin/instances/{made['id']}/stop", key_auth(admin_only))
    assert no_write.status_code == 403
    assert no_write.get_json()["error"]["details"]["scope"] == "instances:write"
    both, _ = create_key(client, admin, ["admin", "instances:read", "instances:write"])
    assert api(client, "POST", f"/admin/instances/{made['id']}/stop",
               key_auth(both)).status_code == 202
