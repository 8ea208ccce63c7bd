"""The authorization cache never outlives a change made through the services."""

from __future__ import annotations

from appliance.services.accounts import authcache
from tests.factories import (
    add_member,
    api,
    bearer,
    create_key,
    create_project,
    key_auth,
    login,
    make_user,
)


def test_a_read_that_raced_with_a_change_is_not_cached():
    gen = authcache.generation()
    authcache.invalidate()  # a change committed while the read was in flight
    authcache.put("k", "stale", gen)
    assert authcache.get("k") is None
    authcache.put("k", "fresh", authcache.generation())
    assert authcache.get("k") == "fresh"


def test_revoking_a_cached_key_takes_effect_on_the_next_request(app, client):
    make_user(app, "owner@example.test")
    owner = bearer(login(client, "owner@example.test"))
    secret, key = create_key(client, owner)
    for _ in range(3):  # cached now
        assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200
    api(client, "DELETE", f"/api-keys/{key['id']}", owner)
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 401


def test_removing_a_member_ends_their_cached_access_at_once(app, client):
    make_user(app, "owner@example.test")
    make_user(app, "member@example.test")
    owner = bearer(login(client, "owner@example.test"))
    member = bearer(login(client, "member@example.test"))
    project = create_project(client, owner)
    add_member(client, owner, project, "member@example.test", "admin")
    assert api(client, "GET", f"/projects/{project}", member).status_code == 200
    member_id = api(client, "GET", "/auth/me", member).get_json()["id"]
    api(client, "PATCH", f"/projects/{project}/members/{member_id}", owner,
        json={"role": "viewer"})
    rename = api(client, "PATCH", f"/projects/{project}", member, json={"name": "x"})
    assert rename.status_code == 403
    api(client, "DELETE", f"/projects/{project}/members/{member_id}", owner)
    assert api(client, "GET", f"/projects/{project}", member).status_code == 404


def test_suspending_a_user_refuses_their_cached_key(app, client):
    make_user(app, "owner@example.test")
    make_user(app, "root@example.test", role="admin")
    owner = bearer(login(client, "owner@example.test"))
    root = bearer(login(client, "root@example.test"))
    secret, _ = create_key(client, owner)
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200
    owner_id = api(client, "GET", "/auth/me", owner).get_json()["id"]
    api(client, "POST", f"/admin/users/{owner_id}/suspend", root, json={"reason": "abuse"})
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 403
