"""API keys: shown once, hashed, and every restriction a key can carry."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import pytest

from appliance.models import ApiKey
from appliance.services import clock
from appliance.services.accounts import api_keys
from tests.factories import (
    add_member,
    api,
    bearer,
    create_key,
    create_project,
    default_project,
    key_auth,
    login,
    make_user,
)


def test_the_secret_is_shown_once_and_only_its_hash_is_kept(app, client, owner):
    secret, key = create_key(client, owner, name="ci")
    assert re.fullmatch(r"sk_[a-z0-9]{8}_[A-Za-z0-9_\-]{32}", secret)
    assert key["prefix"] == secret[:11] and key["last_four"] == secret[-4:]
    with app.app_context():
        row = ApiKey.get_by_id(key["id"])
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in str(row.__data__.values())
    listed = api(client, "GET", "/api-keys", owner)
    assert secret not in listed.get_data(as_text=True)
    assert secret not in api(client, "GET", f"/api-keys/{key['id']}", owner).get_data(
        as_text=True)


def test_a_key_works_as_bearer_and_as_x_api_key(client, owner):
    secret, _ = create_key(client, owner)
    for headers in (key_auth(secret), {"X-API-Key": secret}):
        response = api(client, "GET", "/auth/me", headers)
        assert response.status_code == 200
        assert response.get_json()["email"] == "owner@example.test"


def test_unknown_keys_are_401(client, owner):
    response = api(client, "GET", "/projects", {"X-API-Key": "sk_abcdefgh_nothing"})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"


def test_a_wrong_scope_is_403_naming_the_scope(client, owner):
    secret, _ = create_key(client, owner, scopes=["instances:read"])
    response = api(client, "POST", "/projects", key_auth(secret), json={"name": "x"})
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "scope_denied" and error["details"] == {"scope": "projects:write"}
    # Reading needs no write scope.
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200


def test_a_key_cannot_hand_out_scopes_it_lacks(client, owner):
    secret, _ = create_key(client, owner, scopes=["keys:write"])
    response = api(client, "POST", "/api-keys", key_auth(secret),
                   json={"name": "wider", "scopes": ["keys:write", "billing:write"]})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"scope": "billing:write"}


def test_a_project_key_sees_only_its_project(client, owner):
    lab = create_project(client, owner, "Lab")
    home = default_project(client, owner)
    secret, _ = create_key(client, owner, project_id=lab)
    listed = api(client, "GET", "/projects", key_auth(secret)).get_json()["data"]
    assert [p["id"] for p in listed] == [lab]
    assert api(client, "GET", f"/projects/{lab}", key_auth(secret)).status_code == 200
    assert api(client, "GET", f"/projects/{home}", key_auth(secret)).status_code == 404
    refused = api(client, "POST", "/projects", key_auth(secret), json={"name": "new"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "key_restricted"


def test_an_expired_key_is_401(client, owner):
    expires = clock.now() + dt.timedelta(hours=1)
    secret, key = create_key(client, owner, expires_at=expires.isoformat())
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200
    clock.freeze(expires + dt.timedelta(seconds=1))
    response = api(client, "GET", "/projects", key_auth(secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_expired"
    listed = api(client, "GET", f"/api-keys/{key['id']}", bearer(login(client,
                                                                      "owner@example.test")))
    assert listed.get_json()["status"] == "expired"


def test_an_expiry_in_the_past_is_refused(client, owner):
    response = api(client, "POST", "/api-keys", owner,
                   json={"name": "old", "scopes": ["usage:read"],
                         "expires_at": "2001-01-01T00:00:00Z"})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "expires_at"


def test_allowed_ips_are_enforced(client, owner):
    secret, key = create_key(client, owner, allowed_ips=["10.1.0.0/16", "2001:db8::1"])
    assert key["allowed_ips"] == ["10.1.0.0/16", "2001:db8::1/128"]

    def from_ip(ip):
        return client.get("/api/v1/projects", headers=key_auth(secret),
                          environ_base={"REMOTE_ADDR": ip})

    assert from_ip("10.1.200.3").status_code == 200
    assert from_ip("::ffff:10.1.0.9").status_code == 200  # IPv4-mapped IPv6
    assert from_ip("2001:db8::1").status_code == 200
    refused = from_ip("10.2.0.1")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "ip_not_allowed"
    assert from_ip("127.0.0.1").status_code == 403


def test_a_revoked_key_is_refused_at_once(client, owner):
    secret, key = create_key(client, owner)
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200
    revoked = api(client, "DELETE", f"/api-keys/{key['id']}", owner)
    assert revoked.status_code == 200 and revoked.get_json()["status"] == "revoked"
    response = api(client, "GET", "/projects", key_auth(secret))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_revoked"


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(client, owner):
    old, key = create_key(client, owner)
    rotated = api(client, "POST", f"/api-keys/{key['id']}/rotate", owner,
                  json={"grace_seconds": 3600})
    assert rotated.status_code == 200
    new = rotated.get_json()["secret"]
    assert new != old and rotated.get_json()["key"]["id"] == key["id"]
    assert rotated.get_json()["key"]["scopes"] == key["scopes"]
    assert api(client, "GET", "/projects", key_auth(old)).status_code == 200
    assert api(client, "GET", "/projects", key_auth(new)).status_code == 200
    clock.freeze(clock.now() + dt.timedelta(seconds=3601))
    response = api(client, "GET", "/projects", key_auth(old))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "api_key_rotated"
    assert api(client, "GET", "/projects", key_auth(new)).status_code == 200


def test_rotation_without_grace_refuses_the_old_secret_at_once(client, owner):
    old, key = create_key(client, owner)
    new = api(client, "POST", f"/api-keys/{key['id']}/rotate", owner).get_json()["secret"]
    assert api(client, "GET", "/projects", key_auth(old)).status_code == 401
    assert api(client, "GET", "/projects", key_auth(new)).status_code == 200


def test_a_key_never_exceeds_its_owners_current_role(app, client, owner):
    make_user(app, "viewer@example.test")
    viewer = bearer(login(client, "viewer@example.test"))
    project = create_project(client, owner, "Shared")
    add_member(client, owner, project, "viewer@example.test", "viewer")
    secret, _ = create_key(client, viewer, project_id=project)
    assert api(client, "GET", f"/projects/{project}", key_auth(secret)).status_code == 200
    rename = api(client, "PATCH", f"/projects/{project}", key_auth(secret), json={"name": "x"})
    assert rename.status_code == 403 and rename.get_json()["error"]["code"] == "role_denied"
    viewer_id = api(client, "GET", "/auth/me", viewer).get_json()["id"]
    api(client, "DELETE", f"/projects/{project}/members/{viewer_id}", owner)
    assert api(client, "GET", f"/projects/{project}", key_auth(secret)).status_code == 404


def test_keys_of_a_suspended_owner_are_refused(app, client, owner):
    from appliance.models import User

    secret, _ = create_key(client, owner)
    with app.app_context():
        User.update(status="suspended").where(User.email == "owner@example.test").execute()
    response = api(client, "GET", "/projects", key_auth(secret))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "account_suspended"


def test_keys_cannot_change_passwords_or_sessions(client, owner):
    secret, _ = create_key(client, owner)
    response = api(client, "GET", "/auth/sessions", key_auth(secret))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "api_key_not_allowed"


def test_only_administrators_make_admin_keys_and_an_admin_key_needs_the_scope(app, client,
                                                                             owner):
    refused = api(client, "POST", "/api-keys", owner, json={"name": "a", "scopes": ["admin"]})
    assert refused.status_code == 400
    make_user(app, "root@example.test", role="admin")
    root = bearer(login(client, "root@example.test"))
    admin_secret, _ = create_key(client, root, scopes=["admin"])
    plain_secret, _ = create_key(client, root, scopes=["usage:read"])
    assert api(client, "GET", "/admin/users", key_auth(admin_secret)).status_code == 200
    denied = api(client, "GET", "/admin/users", key_auth(plain_secret))
    assert denied.status_code == 403
    assert denied.get_json()["error"]["details"] == {"scope": "admin"}


def test_usage_is_counted_without_a_write_per_request(app, client, owner):
    secret, key = create_key(client, owner)
    for _ in range(5):
        api(client, "GET", "/projects", key_auth(secret))
    with app.app_context():
        assert ApiKey.get_by_id(key["id"]).usage_count == 0  # not written yet
    listed = api(client, "GET", f"/api-keys/{key['id']}", owner).get_json()
    assert listed["usage_count"] == 5 and listed["last_used_ip"] == "127.0.0.1"
    with app.app_context():
        assert api_keys.flush_usage() == 1
        row = ApiKey.get_by_id(key["id"])
        assert row.usage_count == 5 and row.last_used_at is not None


def test_usage_is_written_once_the_flush_interval_passed(app, client, owner):
    secret, key = create_key(client, owner)
    api(client, "GET", "/projects", key_auth(secret))
    clock.freeze(clock.now() + api_keys.USAGE_FLUSH_INTERVAL + dt.timedelta(seconds=1))
    api(client, "GET", "/projects", key_auth(secret))
    with app.app_context():
        assert ApiKey.get_by_id(key["id"]).usage_count == 2


def test_project_admins_see_and_revoke_members_keys_of_the_project(app, client, owner):
    make_user(app, "member@example.test")
    member = bearer(login(client, "member@example.test"))
    project = create_project(client, owner)
    add_member(client, owner, project, "member@example.test", "member")
    secret, key = create_key(client, member, project_id=create_project(client, member))
    _, project_key = create_key(client, member, project_id=project)
    listed = api(client, "GET", f"/projects/{project}/api-keys", owner).get_json()["data"]
    assert [k["id"] for k in listed] == [project_key["id"]]  # not the member's other key
    other = api(client, "DELETE", f"/projects/{project}/api-keys/{key['id']}", owner)
    assert other.status_code == 404
    revoked = api(client, "DELETE", f"/projects/{project}/api-keys/{project_key['id']}", owner)
    assert revoked.get_json()["status"] == "revoked"
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "k", "scopes": ["instances:read"], "allowed_ips": ["10.0.0.0/33"]},
     "allowed_ips"),
    ({"name": "k", "scopes": ["instances:read"], "allowed_ips": ["example.com"]},
     "allowed_ips"),
    ({"name": "k", "scopes": ["instances:fly"]}, "scopes.0"),
    ({"name": "k", "scopes": []}, "scopes"),
    ({"name": "x" * 101, "scopes": ["instances:read"]}, "name"),
    ({"name": "k", "scopes": ["instances:read"], "project_id": "prj_unknown"}, "project_id"),
    ({"name": "k", "scopes": ["instances:read"], "rate_limit_rpm": 0}, "rate_limit_rpm"),
    ({"name": "k", "scopes": ["instances:read"], "expires_at": "tomorrow"}, "expires_at"),
])
def test_bad_key_input_names_the_field(client, owner, body, field):
    response = api(client, "POST", "/api-keys", owner, json=body)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["details"]["field"] == field


def test_another_users_project_is_an_unknown_project_for_a_key(app, client, owner):
    make_user(app, "other@example.test")
    other = bearer(login(client, "other@example.test"))
    response = api(client, "POST", "/api-keys", owner,
                   json={"name": "k", "scopes": ["instances:read"],
                         "project_id": default_project(client, other)})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "project_id"


def test_other_users_keys_are_404(app, client, owner):
    _, key = create_key(client, owner)
    make_user(app, "other@example.test")
    other = bearer(login(client, "other@example.test"))
    for method, path in (("GET", ""), ("DELETE", ""), ("POST", "/rotate")):
        response = api(client, method, f"/api-keys/{key['id']}{path}", other)
        assert response.status_code == 404
