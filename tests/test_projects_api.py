"""Projects and members over the JSON API: roles, ownership rules, tenancy."""

from __future__ import annotations

import itertools
import re

import pytest

from appliance.models import Backup, Instance, Template
from appliance.services import clock, projects
from appliance.services.ids import new_id
from appliance.services.instances import console
from tests import sshkeys
from tests.factories import (
    add_member,
    api,
    create_key,
    create_project,
    default_project,
    key_auth,
    make_user,
    run_jobs,
    signed_in,
)

ROLES = ("viewer", "member", "admin", "owner")


@pytest.fixture
def team(app, client, owner, outsider):
    """An owner, one user per role, a target member to act on, and an outsider; the
    role users belong to no project until `_fresh_project` adds them."""
    people = {"owner": owner}
    for name in (*ROLES[:3], "target"):
        email = f"{name}@example.test"
        make_user(app, email)
        people[name] = signed_in(client, email)
    people["outsider"] = outsider
    return people


_made = itertools.count(1)


def _fresh_project(client, team) -> str:
    # project names are unique per owner
    project = create_project(client, team["owner"], f"Team {next(_made)}")
    for role in ROLES[:3]:
        add_member(client, team["owner"], project, f"{role}@example.test", role)
    add_member(client, team["owner"], project, "target@example.test", "member")
    return project


def _target_id(client, team) -> str:
    return api(client, "GET", "/auth/me", team["target"]).get_json()["id"]


I = "/projects/{project_id}/instances/{instance_id}"  # noqa: E741 - short on purpose
C = I + "/console/{console_id}"
# Every project-scoped route, the least role it needs, a request that would succeed, the
# status it gets, and the instance's power state it needs (None: any).
# `test_the_role_table_covers_every_project_route` fails when a route is missing here.
ROUTES = [
    ("GET", "/projects/{project_id}", "viewer", None, 200, None),
    ("PATCH", "/projects/{project_id}", "admin", {"name": "Renamed {project_id}"}, 200, None),
    ("DELETE", "/projects/{project_id}", "owner", None, 409, None),  # holds an instance
    ("GET", "/projects/{project_id}/members", "viewer", None, 200, None),
    ("POST", "/projects/{project_id}/members", "admin",
     {"email": "outsider@example.test", "role": "viewer"}, 201, None),
    ("PATCH", "/projects/{project_id}/members/{user_id}", "admin", {"role": "viewer"}, 200,
     None),
    ("DELETE", "/projects/{project_id}/members/{user_id}", "admin", None, 204, None),
    ("GET", "/projects/{project_id}/api-keys", "admin", None, 200, None),
    ("DELETE", "/projects/{project_id}/api-keys/{key_id}", "admin", None, 200, None),
    ("GET", "/projects/{project_id}/instances", "viewer", None, 200, None),
    ("POST", "/projects/{project_id}/instances", "member",
     {"name": "new-1", "plan_id": "small", "image_id": "{image}"}, 202, None),
    ("GET", I, "viewer", None, 200, None),
    ("PATCH", I, "member", {"name": "renamed"}, 200, None),
    ("DELETE", I, "member", None, 202, None),
    ("POST", I + "/start", "member", None, 202, "stopped"),
    ("POST", I + "/stop", "member", None, 202, None),
    ("POST", I + "/shutdown", "member", None, 202, None),
    ("POST", I + "/reboot", "member", None, 202, None),
    ("POST", I + "/reset", "member", None, 202, None),
    ("POST", I + "/resize", "member", {"plan_id": "large"}, 202, None),
    ("POST", I + "/rebuild", "member", {"image_id": "{other_image}"}, 202, None),
    ("POST", I + "/reset-password", "member", {}, 202, None),
    ("GET", I + "/password", "member", None, 200, None),
    ("DELETE", I + "/password", "member", None, 204, None),
    ("POST", I + "/ssh-keys", "member", {"public_key": sshkeys.ED25519[0]}, 202, None),
    ("GET", I + "/events", "viewer", None, 200, None),
    ("GET", I + "/logs", "viewer", None, 200, None),
    ("GET", "/projects/{project_id}/jobs", "viewer", None, 200, None),
    ("GET", I + "/backups", "viewer", None, 200, None),
    ("POST", I + "/backups", "member", {"name": "nightly"}, 202, None),
    ("GET", I + "/backups/{backup_id}", "viewer", None, 200, None),
    ("DELETE", I + "/backups/{backup_id}", "member", None, 204, None),
    ("POST", I + "/backups/{backup_id}/restore", "member", None, 202, None),
    ("GET", "/projects/{project_id}/backups", "viewer", None, 200, None),
    ("GET", "/projects/{project_id}/backups/{backup_id}", "viewer", None, 200, None),
    ("DELETE", "/projects/{project_id}/backups/{backup_id}", "member", None, 204, None),
    ("GET", "/projects/{project_id}/jobs/{job_id}", "viewer", None, 200, None),
    ("PUT", I + "/backup-tier", "member", {"tier": "basic"}, 204, None),
    ("POST", I + "/backups/{backup_id}/template", "member", {"name": "golden"}, 202, None),
    ("GET", "/projects/{project_id}/templates", "viewer", None, 200, None),
    ("GET", "/projects/{project_id}/templates/{template_id}", "viewer", None, 200, None),
    ("PATCH", "/projects/{project_id}/templates/{template_id}", "member", {"name": "base"},
     200, None),
    ("DELETE", "/projects/{project_id}/templates/{template_id}", "member", None, 204, None),
    ("GET", I + "/metrics", "viewer", None, 200, None),
    ("GET", I + "/logs/stream", "viewer", None, 200, None),
    ("POST", I + "/console", "member", {}, 201, None),
    # A console session is its opener's alone: the target member's is 404
    # console_not_found to the others who may operate, after the role was checked (a
    # viewer still gets 403).
    ("GET", C, "member", None, 404, None),
    ("GET", C + "/stream", "member", None, 404, None),
    ("POST", C + "/input", "member", {"data": "bHMK"}, 404, None),
    ("POST", C + "/resize", "member", {"cols": 100, "rows": 30}, 404, None),
    ("DELETE", C, "member", None, 404, None),
]


def _world(app, client, team, catalog, state=None) -> dict[str, str]:
    """A project with every role, an instance (in `state`), a member's project key."""
    project = _fresh_project(client, team)
    _, target_key = create_key(client, team["target"], project_id=project)
    created = api(client, "POST", f"/projects/{project}/instances", team["owner"],
                  json={"name": "web-1", "plan_id": "small", "image_id": catalog["image"]})
    run_jobs(app)
    instance = created.get_json()["instance"]["id"]
    console_id = _console(client, team, project, instance)  # (ends with a stop)
    if state == "stopped":
        api(client, "POST", f"/projects/{project}/instances/{instance}/stop", team["owner"])
        run_jobs(app)
    return {"project_id": project, "user_id": _target_id(client, team),
            "key_id": target_key["id"], "instance_id": instance,
            "job_id": created.get_json()["job"]["id"], "backup_id": _backup(app, instance),
            "template_id": _template(app, instance), "console_id": console_id,
            **catalog}


def _backup(app, instance_id: str) -> str:
    """A final backup row of the instance naming an archive (never read: its restore job
    is queued, not run; deleting it removes no file)."""
    with app.app_context():
        instance = Instance.get_by_id(instance_id)
        now = clock.now()
        backup_id = new_id("bak")
        return Backup.create(id=backup_id, project=instance.project_id, instance=instance,
                             instance_name=instance.name, node=instance.node_id, kind="final",
                             status="available", archive=f"{backup_id}.fake.archive",
                             size_gb=1, image=instance.image_id, created_at=now,
                             updated_at=now).id


def _template(app, instance_id: str) -> str:
    """An available template row of the project (its archive is never read)."""
    with app.app_context():
        instance = Instance.get_by_id(instance_id)
        now = clock.now()
        template_id = new_id("tpl")
        return Template.create(id=template_id, project=instance.project_id, name="golden-1",
                               status="available", source_instance=instance,
                               source_instance_name=instance.name, node=instance.node_id,
                               archive=f"{template_id}.fake.archive", size_bytes=1,
                               size_gb=1, image=instance.image_id, created_at=now,
                               updated_at=now).id


def _console(client, team, project: str, instance: str) -> str:
    """A console session the target member opened; the previous world's are closed first
    (the caps would refuse a fifth)."""
    console.reset()
    opened = api(client, "POST", f"/projects/{project}/instances/{instance}/console",
                 team["target"], json={})
    assert opened.status_code == 201, opened.get_json()
    return opened.get_json()["console"]["id"]


def _fill(value, names: dict[str, str]):
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


def test_the_role_table_covers_every_project_route(client):
    document = client.get("/api/v1/openapi.json").get_json()
    documented = {(method.upper(), path.removeprefix("/api/v1"))
                  for path, item in document["paths"].items() if "{project_id}" in path
                  for method in item}
    assert documented == {(method, path) for method, path, *_ in ROUTES}


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p, *_ in ROUTES])
def test_each_role_can_do_what_its_rank_allows(app, client, team, catalog, route):
    method, path, least, body, status, state = route
    for role in ROLES:
        names = _world(app, client, team, catalog, state)
        response = api(client, method, path.format(**names), team[role],
                       json=_fill(body, names))
        allowed = ROLES.index(role) >= ROLES.index(least)
        if allowed:
            assert response.status_code == status, (role, response.get_json())
        else:
            assert response.status_code == 403, (role, response.get_json())
            error = response.get_json()["error"]
            assert error["code"] == "role_denied"
            assert error["details"] == {"required_role": least, "role": role}


def test_outsiders_get_404_on_every_project_route_with_a_token_or_a_key(app, client, team,
                                                                       catalog):
    """Another tenant's project does not exist for you, whatever you send."""
    names = _world(app, client, team, catalog)
    outsider_secret, _ = create_key(client, team["outsider"],
                                    scopes=list(projects_scopes()))
    own_project = default_project(client, team["outsider"])
    # A key of a real member, restricted to another project of theirs: also 404.
    elsewhere = create_project(client, team["admin"], "Elsewhere")
    restricted_secret, _ = create_key(client, team["admin"], scopes=list(projects_scopes()),
                                      project_id=elsewhere)
    document = client.get("/api/v1/openapi.json").get_json()
    routes = [(method.upper(), path.removeprefix("/api/v1"))
              for path, item in document["paths"].items() if "{project_id}" in path
              for method in item]
    assert len(routes) >= len(ROUTES)
    callers = {"outsider token": team["outsider"], "outsider key": key_auth(outsider_secret),
               "member's key restricted elsewhere": key_auth(restricted_secret)}
    for method, path in routes:
        body = next((b for m, p, _, b, *_ in ROUTES if (m, p) == (method, path)), None)
        url = re.sub(r"{(\w+)}", lambda m: names[m.group(1)], path)
        for name, headers in callers.items():
            response = api(client, method, url, headers, json=_fill(body, names))
            assert response.status_code == 404, (name, method, path, response.get_json())
            assert response.get_json()["error"]["code"] == "project_not_found"
    # ... and the outsider's own project answers as usual.
    assert api(client, "GET", f"/projects/{own_project}",
               key_auth(outsider_secret)).status_code == 200
    # Nothing changed: the project still has its members and its running instance.
    project = names["project_id"]
    listed = api(client, "GET", f"/projects/{project}/members", team["owner"]).get_json()
    assert len(listed["data"]) == 5
    instance = api(client, "GET", f"/projects/{project}/instances/{names['instance_id']}",
                   team["owner"]).get_json()
    assert (instance["name"], instance["status"]) == ("web-1", "running")


def projects_scopes():
    from appliance.services.accounts.sessions import SCOPES

    return [scope for scope in SCOPES if scope != "admin"]


def test_every_user_starts_with_a_default_project_they_own(client, team):
    listed = api(client, "GET", "/projects", team["viewer"]).get_json()
    assert [(p["name"], p["role"], p["is_default"]) for p in listed["data"]] == [
        ("Default project", "owner", True)]


def test_lists_show_only_your_projects_and_page_through_them(client, team):
    for index in range(4):
        create_project(client, team["owner"], f"P{index}")
    seen, cursor = [], None
    while True:
        query = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api(client, "GET", "/projects", team["owner"], query_string=query).get_json()
        seen += [p["name"] for p in page["data"]]
        assert page["page"]["has_more"] == (page["page"]["next_cursor"] is not None)
        cursor = page["page"]["next_cursor"]
        if not cursor:
            break
    assert seen == ["P3", "P2", "P1", "P0", "Default project"]
    outsider = api(client, "GET", "/projects", team["outsider"]).get_json()["data"]
    assert [p["name"] for p in outsider] == ["Default project"]


def test_the_default_project_cannot_be_deleted_but_can_be_renamed(client, team):
    project = default_project(client, team["owner"])
    response = api(client, "DELETE", f"/projects/{project}", team["owner"])
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "default_project"
    renamed = api(client, "PATCH", f"/projects/{project}", team["owner"], json={"name": " Home "})
    assert renamed.get_json()["name"] == "Home"


def test_a_project_holding_instances_cannot_be_deleted(app, client, team):
    project = create_project(client, team["owner"])
    holders = list(projects._holders)
    projects.register_holder(lambda project_id: (2 if project_id == project else 0,
                                                 "instances"))
    try:
        response = api(client, "DELETE", f"/projects/{project}", team["owner"])
    finally:
        projects._holders[:] = holders
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "project_not_empty"
    assert response.get_json()["error"]["details"] == {"instances": 2}
    assert api(client, "DELETE", f"/projects/{project}", team["owner"]).status_code == 204
    assert api(client, "GET", f"/projects/{project}", team["owner"]).status_code == 404


def test_deleting_a_project_revokes_its_keys(client, team):
    project = create_project(client, team["owner"])
    secret, _ = create_key(client, team["owner"], project_id=project)
    assert api(client, "DELETE", f"/projects/{project}", team["owner"]).status_code == 204
    response = api(client, "GET", "/projects", key_auth(secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_revoked"


def test_the_last_owner_can_neither_leave_nor_be_demoted(client, team):
    project = create_project(client, team["owner"])
    owner_id = api(client, "GET", "/auth/me", team["owner"]).get_json()["id"]
    demote = api(client, "PATCH", f"/projects/{project}/members/{owner_id}", team["owner"],
                 json={"role": "admin"})
    assert demote.status_code == 409 and demote.get_json()["error"]["code"] == "last_owner"
    leave = api(client, "DELETE", f"/projects/{project}/members/{owner_id}", team["owner"])
    assert leave.status_code == 409 and leave.get_json()["error"]["code"] == "last_owner"
    # With a second owner, the first may step down.
    add_member(client, team["owner"], project, "admin@example.test", "owner")
    assert demote_ok(client, team, project, owner_id).status_code == 200


def demote_ok(client, team, project, owner_id):
    return api(client, "PATCH", f"/projects/{project}/members/{owner_id}", team["owner"],
               json={"role": "admin"})


def test_only_owners_hand_out_or_take_away_ownership(client, team):
    project = _fresh_project(client, team)
    target = _target_id(client, team)
    promote = api(client, "PATCH", f"/projects/{project}/members/{target}", team["admin"],
                  json={"role": "owner"})
    assert promote.status_code == 403
    assert promote.get_json()["error"]["details"]["required_role"] == "owner"
    add_owner = api(client, "POST", f"/projects/{project}/members", team["admin"],
                    json={"email": "outsider@example.test", "role": "owner"})
    assert add_owner.status_code == 403
    assert api(client, "PATCH", f"/projects/{project}/members/{target}", team["owner"],
               json={"role": "owner"}).status_code == 200
    # An admin cannot remove an owner either.
    assert api(client, "DELETE", f"/projects/{project}/members/{target}",
               team["admin"]).status_code == 403


def test_any_member_may_leave(client, team):
    project = _fresh_project(client, team)
    viewer_id = api(client, "GET", "/auth/me", team["viewer"]).get_json()["id"]
    response = api(client, "DELETE", f"/projects/{project}/members/{viewer_id}", team["viewer"])
    assert response.status_code == 204
    assert api(client, "GET", f"/projects/{project}", team["viewer"]).status_code == 404


def test_adding_members_names_what_is_wrong(client, team):
    project = create_project(client, team["owner"])
    unknown = api(client, "POST", f"/projects/{project}/members", team["owner"],
                  json={"email": "nobody@example.test"})
    assert unknown.status_code == 400
    assert unknown.get_json()["error"]["details"]["field"] == "email"
    add_member(client, team["owner"], project, "viewer@example.test", "viewer")
    again = api(client, "POST", f"/projects/{project}/members", team["owner"],
                json={"email": "VIEWER@example.test"})
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_member"
    bad_role = api(client, "POST", f"/projects/{project}/members", team["owner"],
                   json={"email": "admin@example.test", "role": "god"})
    assert bad_role.status_code == 400
    assert bad_role.get_json()["error"]["details"]["field"] == "role"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": ""}, "name"),
    ({"name": "x" * 101}, "name"),
    ({"name": 5}, "name"),
    ({}, "name"),
    ({"name": "ok", "extra": 1}, "extra"),
])
def test_bad_project_input_names_the_field(client, team, body, field):
    response = api(client, "POST", "/projects", team["owner"], json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_a_whitespace_name_is_refused_by_the_service(client, team):
    response = api(client, "POST", "/projects", team["owner"], json={"name": "   "})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "name"


def test_unknown_projects_are_404(client, team):
    response = api(client, "GET", "/projects/prj_nope", team["owner"])
    assert response.status_code == 404
