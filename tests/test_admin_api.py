"""Administration over the JSON API, and the audit trail it leaves."""

import pytest

from tests.factories import PASSWORD, bearer, login, make_user


@pytest.fixture
def admin_tokens(client, admin_user):
    return login(client, admin_user.email)


def test_non_admins_get_403_everywhere_in_admin(app, client):
    user = make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    for method, path in [("get", "/api/v1/admin/users"),
                         ("get", f"/api/v1/admin/users/{user.id}"),
                         ("post", f"/api/v1/admin/users/{user.id}/suspend"),
                         ("get", "/api/v1/admin/mail-outbox"),
                         ("get", "/api/v1/admin/audit-log")]:
        kwargs = {"json": {"reason": "x"}} if method == "post" else {}
        response = getattr(client, method)(path, headers=bearer(tokens), **kwargs)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "admin_only"


def test_search_pages_through_users(app, client, admin_tokens):
    for n in range(5):
        make_user(app, f"user{n}@example.test")
    seen = []
    cursor = None
    while True:
        url = "/api/v1/admin/users?q=user&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=bearer(admin_tokens)).get_json()
        seen += [u["email"] for u in body["data"]]
        assert body["page"]["limit"] == 2
        cursor = body["page"]["next_cursor"]
        assert body["page"]["has_more"] is (cursor is not None)
        if not cursor:
            break
    assert sorted(seen) == [f"user{n}@example.test" for n in range(5)]


def test_suspend_ends_sessions_and_unsuspend_lets_the_user_back(app, client, admin_tokens):
    bob = make_user(app, "bob@example.test")
    bob_tokens = login(client, "bob@example.test")
    missing_reason = client.post(f"/api/v1/admin/users/{bob.id}/suspend",
                                 headers=bearer(admin_tokens), json={})
    assert missing_reason.status_code == 400
    response = client.post(f"/api/v1/admin/users/{bob.id}/suspend",
                           headers=bearer(admin_tokens), json={"reason": "unpaid invoices"})
    assert response.status_code == 200
    assert response.get_json()["status"] == "suspended"
    assert client.get("/api/v1/auth/me", headers=bearer(bob_tokens)).status_code == 401
    refused = client.post("/api/v1/auth/login", json={"email": "bob@example.test",
                                                       "password": PASSWORD})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "account_suspended"
    assert client.post(f"/api/v1/admin/users/{bob.id}/unsuspend",
                       headers=bearer(admin_tokens)).status_code == 200
    assert login(client, "bob@example.test")["access_token"]


def test_an_admin_cannot_suspend_themselves_and_the_last_admin_stays(app, client, admin_tokens):
    me = client.get("/api/v1/auth/me", headers=bearer(admin_tokens)).get_json()
    response = client.post(f"/api/v1/admin/users/{me['id']}/suspend",
                           headers=bearer(admin_tokens), json={"reason": "oops"})
    assert response.status_code == 409
    demote = client.put(f"/api/v1/admin/users/{me['id']}/role", headers=bearer(admin_tokens),
                        json={"role": "user"})
    assert demote.status_code == 409
    assert demote.get_json()["error"]["code"] == "last_admin"


def test_make_admin(app, client, admin_tokens):
    bob = make_user(app, "bob@example.test")
    response = client.put(f"/api/v1/admin/users/{bob.id}/role", headers=bearer(admin_tokens),
                          json={"role": "admin"})
    assert response.get_json()["role"] == "admin"
    bob_tokens = login(client, "bob@example.test")
    assert client.get("/api/v1/admin/users", headers=bearer(bob_tokens)).status_code == 200


def test_unknown_users_are_404(client, admin_tokens):
    response = client.get("/api/v1/admin/users/usr_nothing", headers=bearer(admin_tokens))
    assert response.status_code == 404


def test_an_invitation_opens_invite_only_signup_once(make_app):
    app = make_app(SIGNUP="invite")
    client = app.test_client()
    make_user(app, "root@example.test", role="admin")
    tokens = login(client, "root@example.test")
    invite = client.post("/api/v1/admin/invites", headers=bearer(tokens),
                         json={"email": "friend@example.test"}).get_json()
    assert invite["signup_url"].endswith(f"/signup?invite={invite['code']}")
    other = client.post("/api/v1/auth/signup", json={
        "email": "stranger@example.test", "password": PASSWORD,
        "invite_code": invite["code"]})
    assert other.status_code == 403
    ok = client.post("/api/v1/auth/signup", json={
        "email": "friend@example.test", "password": PASSWORD, "invite_code": invite["code"]})
    assert ok.status_code == 201


def test_resend_verification_and_the_outbox(app, client, admin_tokens):
    bob = make_user(app, "bob@example.test", verified=False)
    assert client.post(f"/api/v1/admin/users/{bob.id}/resend-verification",
                       headers=bearer(admin_tokens)).status_code == 202
    outbox = client.get("/api/v1/admin/mail-outbox?status=held",
                        headers=bearer(admin_tokens)).get_json()["data"]
    assert outbox[0]["to"] == "bob@example.test"
    assert "/verify-email?token=" in outbox[0]["body"]


def test_the_audit_log_records_sign_ins_failures_passwords_and_admin_actions(app, client,
                                                                           admin_tokens):
    bob = make_user(app, "bob@example.test")
    client.post("/api/v1/auth/login", json={"email": "bob@example.test", "password": "nope nope"})
    bob_tokens = login(client, "bob@example.test")
    client.post("/api/v1/auth/password/change", headers=bearer(bob_tokens),
                json={"current_password": PASSWORD, "new_password": "a new long passphrase"})
    client.post(f"/api/v1/admin/users/{bob.id}/suspend", headers=bearer(admin_tokens),
                json={"reason": "test"})
    entries = client.get("/api/v1/admin/audit-log?limit=100",
                         headers=bearer(admin_tokens)).get_json()["data"]
    actions = {(e["action"], e["actor"], e["success"]) for e in entries}
    assert ("auth.sign_in_failed", bob.id, False) in actions
    assert ("auth.signed_in", bob.id, True) in actions
    assert ("auth.password_changed", bob.id, True) in actions
    suspended = next(e for e in entries if e["action"] == "admin.user_suspended")
    assert suspended["target_id"] == bob.id and suspended["details"]["reason"] == "test"
    assert suspended["ip"] == "127.0.0.1"
    only_failures = client.get("/api/v1/admin/audit-log?action=auth.sign_in_failed",
                               headers=bearer(admin_tokens)).get_json()["data"]
    assert {e["action"] for e in only_failures} == {"auth.sign_in_failed"}
