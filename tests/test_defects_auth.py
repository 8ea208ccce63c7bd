"""Defects of authentication, idempotency and request parsing, each pinned by the behaviour
that failed: replays that skipped authorization, an idempotency record written apart from
its resource, TOTP guesses reset by a password step, unthrottled password re-checks,
deep JSON as a 500, two credentials in one request, and auth pages that said too little.
(The crash of a served process is in tests/test_defects_auth_crash.py.)"""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest

from appliance import config
from appliance.api import projects as projects_api
from appliance.models import IdempotencyRecord, MailOutbox, Project, User
from appliance.services import clock
from appliance.services.accounts import users
from tests.factories import (
    PASSWORD,
    api,
    bearer,
    create_key,
    csrf_from,
    key_auth,
    login,
    make_user,
    signed_in,
    token_from_mail,
)

NEW_KEY = {"name": "deploy", "scopes": ["instances:read", "instances:write", "keys:write"]}


def _post(client, path, headers, key, body):
    return api(client, "POST", path, {**headers, "Idempotency-Key": key}, json=body)


# 1. A replay authorizes like a first request ------------------------------------------


def test_a_read_only_key_cannot_replay_a_key_creation_and_read_its_secret(client, owner):
    first = _post(client, "/api-keys", owner, "make-deploy-key", NEW_KEY)
    assert first.status_code == 201
    secret = first.get_json()["secret"]
    read_only, _ = create_key(client, owner, scopes=["instances:read"])

    replay = _post(client, "/api-keys", key_auth(read_only), "make-deploy-key", NEW_KEY)

    assert replay.status_code in (403, 422)
    assert secret not in replay.get_data(as_text=True)
    assert "Idempotent-Replayed" not in replay.headers


def test_a_read_only_key_cannot_replay_an_instance_creation_and_read_its_password(
        app, client, owner, owner_project, catalog):
    body = {"name": "web-1", "plan_id": catalog["plan"], "image_id": catalog["image"]}
    path = f"/projects/{owner_project}/instances"
    first = _post(client, path, owner, "web-1", body)
    assert first.status_code == 202, first.get_json()
    password = first.get_json()["password"]
    assert password
    read_only, _ = create_key(client, owner, scopes=["instances:read"])

    replay = _post(client, path, key_auth(read_only), "web-1", body)

    assert replay.status_code in (403, 422)
    assert password not in replay.get_data(as_text=True)


def test_another_key_of_the_owner_with_the_scope_does_not_replay_either(client, owner):
    first = _post(client, "/api-keys", owner, "make-deploy-key", NEW_KEY)
    secret = first.get_json()["secret"]
    other, _ = create_key(client, owner, scopes=["instances:read", "instances:write",
                                                 "keys:write"])

    replay = _post(client, "/api-keys", key_auth(other), "make-deploy-key", NEW_KEY)

    assert replay.status_code == 422
    assert replay.get_json()["error"]["code"] == "idempotency_mismatch"
    assert secret not in replay.get_data(as_text=True)


def test_the_key_that_made_a_request_replays_it(client, owner):
    key, _ = create_key(client, owner)
    first = _post(client, "/projects", key_auth(key), "lab", {"name": "Lab"})
    again = _post(client, "/projects", key_auth(key), "lab", {"name": "Lab"})
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_a_replay_after_the_callers_project_role_was_lowered_is_refused(
        app, client, owner, owner_project):
    helper = make_user(app, "helper@example.test")
    _post(client, f"/projects/{owner_project}/members", owner, "add-helper",
          {"email": helper.email, "role": "admin"})
    helper_auth = signed_in(client, helper.email)
    make_user(app, "grace@example.test")
    body = {"email": "grace@example.test", "role": "member"}
    path = f"/projects/{owner_project}/members"
    assert _post(client, path, helper_auth, "add-grace", body).status_code == 201
    lowered = api(client, "PATCH", f"/projects/{owner_project}/members/{helper.id}", owner,
                  json={"role": "viewer"})
    assert lowered.status_code == 200, lowered.get_json()

    replay = _post(client, path, helper_auth, "add-grace", body)

    assert replay.status_code == 403
    assert "Idempotent-Replayed" not in replay.headers


# 2. The record commits with its resource --------------------------------------------


def test_a_failure_after_the_service_committed_leaves_nothing_to_create_twice(
        app, client, owner, monkeypatch):
    """The service committed the project, then answering it failed (as a crash would cut
    it off): the project must go with the answer, so that the retry creates one, not two."""
    with app.app_context():
        before = Project.select().count()

    def broken(found):
        raise RuntimeError("the process died while answering")

    monkeypatch.setattr(projects_api.ProjectOut, "of", broken)
    client.application.config["PROPAGATE_EXCEPTIONS"] = False
    failed = _post(client, "/projects", owner, "lab-once", {"name": "Lab"})
    assert failed.status_code == 500
    monkeypatch.undo()

    retried = _post(client, "/projects", owner, "lab-once", {"name": "Lab"})
    assert retried.status_code == 201
    with app.app_context():
        assert Project.select().count() == before + 1
        assert IdempotencyRecord.select().where(
            IdempotencyRecord.state == "in_flight").count() == 0


def test_the_idempotency_record_is_written_in_the_resource_transaction(app, client, owner):
    """Both rows exist together: no record is ever left "in flight" after an answer."""
    assert _post(client, "/projects", owner, "lab", {"name": "Lab"}).status_code == 201
    with app.app_context():
        rows = list(IdempotencyRecord.select())
    assert [(row.key, row.state, row.status) for row in rows] == [("lab", "done", 201)]


# 3. TOTP codes and current passwords have their own budgets -------------------------


@pytest.fixture
def frozen():
    clock.freeze(dt.datetime(2026, 11, 23, 12, 0, 5, tzinfo=dt.UTC))


def _enrol(client, email):
    tokens = login(client, email)
    enrolment = client.post("/api/v1/auth/mfa/enroll", headers=bearer(tokens)).get_json()
    code = pyotp.TOTP(enrolment["secret"]).at(clock.now())
    assert client.post("/api/v1/auth/mfa/confirm", headers=bearer(tokens),
                       json={"code": code}).status_code == 200
    return enrolment["secret"]


def _from(ip):
    return {"REMOTE_ADDR": ip}


def _mfa_token(client, email, ip):
    response = client.post("/api/v1/auth/login", environ_base=_from(ip),
                           json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["mfa_token"]


def _wrong_code(client, mfa_token, ip):
    return client.post("/api/v1/auth/mfa/challenge", environ_base=_from(ip),
                       json={"mfa_token": mfa_token, "code": "000000"})


def test_wrong_totp_codes_are_throttled_across_password_logins(app, client, frozen):
    make_user(app, "ada@example.test")
    _enrol(client, "ada@example.test")
    statuses = []
    for attempt in range(12):
        ip = f"192.0.2.{attempt % 4 + 1}"
        mfa_token = _mfa_token(client, "ada@example.test", ip)
        for _ in range(3):
            statuses.append(_wrong_code(client, mfa_token, ip).status_code)
    with app.app_context():
        limit = config.active()["LOGIN_FAILURES_PER_ACCOUNT"]
    assert statuses[:limit] == [400] * limit
    assert set(statuses[limit:]) == {429}
    limited = _wrong_code(client, _mfa_token(client, "ada@example.test", "192.0.2.9"),
                          "192.0.2.9")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_one_mfa_token_takes_only_a_few_wrong_codes(make_app, frozen):
    app = make_app(LOGIN_FAILURES_PER_ACCOUNT=100)
    client = app.test_client()
    make_user(app, "ada@example.test")
    secret = _enrol(client, "ada@example.test")
    mfa_token = _mfa_token(client, "ada@example.test", "192.0.2.1")
    statuses = [_wrong_code(client, mfa_token, f"192.0.2.{n}").status_code for n in range(6)]
    assert statuses == [400] * users.MFA_FAILURES_PER_TOKEN + [429]
    # A fresh password step gives a fresh token its own budget (the account's is larger).
    clock.advance(dt.timedelta(seconds=30))
    fresh = _mfa_token(client, "ada@example.test", "192.0.2.1")
    done = client.post("/api/v1/auth/mfa/challenge",
                       json={"mfa_token": fresh, "code": pyotp.TOTP(secret).at(clock.now())})
    assert done.status_code == 200


def test_wrong_current_passwords_on_password_change_are_throttled(make_app):
    app = make_app(LOGIN_FAILURES_PER_ACCOUNT=3)
    client = app.test_client()
    make_user(app, "ada@example.test")
    statuses = []
    for _ in range(4):
        auth = signed_in(client, "ada@example.test")  # a right password resets nothing here
        statuses.append(api(client, "POST", "/auth/password/change", auth,
                            json={"current_password": "guess", "new_password": "x" * 20}
                            ).status_code)
    assert statuses == [400, 400, 400, 429]
    limited = api(client, "POST", "/auth/password/change", signed_in(client, "ada@example.test"),
                  json={"current_password": PASSWORD, "new_password": "y" * 20})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_wrong_current_passwords_on_email_change_are_throttled(make_app):
    app = make_app(LOGIN_FAILURES_PER_ACCOUNT=3)
    client = app.test_client()
    make_user(app, "ada@example.test")
    auth = signed_in(client, "ada@example.test")
    statuses = [api(client, "PATCH", "/auth/me", auth,
                    json={"email": "new@example.test", "current_password": "guess"}).status_code
                for _ in range(4)]
    assert statuses == [400, 400, 400, 429]
    assert "Retry-After" in api(client, "PATCH", "/auth/me", auth, json={
        "email": "new@example.test", "current_password": "guess"}).headers


# 4. Deep JSON is refused at parse time ---------------------------------------------


@pytest.mark.parametrize("depth", [100_000, 2_000, 100])
def test_deeply_nested_json_is_400_even_before_sign_in(client, depth):
    body = '{"email": ' + "[" * depth + "]" * depth + ', "password": "x"}'
    response = client.post("/api/v1/auth/login", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_ordinarily_nested_json_still_parses(client, owner):
    response = api(client, "POST", "/projects", owner, data='{"name": "Lab"}',
                   content_type="application/json")
    assert response.status_code == 201


# 5. One credential per request -------------------------------------------------------


def test_a_garbage_authorization_beside_a_valid_api_key_is_401(client, owner):
    key, _ = create_key(client, owner)
    assert api(client, "GET", "/projects", {"X-API-Key": key}).status_code == 200
    for authorization in ("Bearer garbage", "Basic Zm9vOmJhcg==", "nonsense",
                          f"Bearer {key}"):
        response = api(client, "GET", "/projects",
                       {"X-API-Key": key, "Authorization": authorization})
        assert response.status_code == 401, authorization
        assert "WWW-Authenticate" in response.headers


# 6. Small texts ------------------------------------------------------------------------


def test_a_used_reset_link_says_so_before_the_form(app, client):
    make_user(app, "ada@example.test")
    client.post("/api/v1/auth/password/forgot", json={"email": "ada@example.test"})
    token = token_from_mail(app, "ada@example.test", "/reset-password")
    fresh = client.get(f"/reset-password?token={token}").get_data(as_text=True)
    assert 'name="password"' in fresh and "not valid" not in fresh
    assert client.post("/api/v1/auth/password/reset",
                       json={"token": token, "password": "a new long password"}
                       ).status_code == 200

    for link in (f"/reset-password?token={token}", "/reset-password?token=made-up",
                 "/reset-password"):
        page = client.get(link)
        text = page.get_data(as_text=True)
        assert "not valid or was already used" in text, link
        assert 'name="password"' not in text, link
        assert "Ask for a new link" in text


def test_an_expired_reset_link_says_so_before_the_form(app, client):
    make_user(app, "ada@example.test")
    client.post("/api/v1/auth/password/forgot", json={"email": "ada@example.test"})
    token = token_from_mail(app, "ada@example.test", "/reset-password")
    clock.freeze(clock.now() + users.RESET_TTL + dt.timedelta(seconds=1))
    text = client.get(f"/reset-password?token={token}").get_data(as_text=True)
    assert "expired" in text and 'name="password"' not in text


def test_a_used_email_confirm_link_says_so_before_the_button(app, client):
    client.post("/api/v1/auth/signup", json={"email": "ada@example.test",
                                             "password": "a long enough password"})
    token = token_from_mail(app, "ada@example.test", "/verify-email")
    fresh = client.get(f"/verify-email?token={token}").get_data(as_text=True)
    assert "Confirm my email address" in fresh
    page = client.get(f"/verify-email?token={token}")  # GET never uses the token up
    assert "Confirm my email address" in page.get_data(as_text=True)
    csrf = csrf_from(fresh)
    done = client.post("/verify-email", data={"token": token, "csrf_token": csrf})
    assert "Email confirmed" in done.get_data(as_text=True)

    for link in (f"/verify-email?token={token}", "/verify-email?token=made-up"):
        text = client.get(link).get_data(as_text=True)
        assert "not valid or was already used" in text, link
        assert "Confirm my email address" not in text, link


REASON = "Payment for March <bounced>"


def _suspend(client, admin, user_id):
    response = api(client, "POST", f"/admin/users/{user_id}/suspend", admin,
                   json={"reason": REASON})
    assert response.status_code == 200, response.get_json()


def test_a_suspended_user_is_told_the_reason_at_sign_in(app, client, admin):
    user = make_user(app, "ada@example.test")
    _suspend(client, admin, user.id)

    refused = client.post("/api/v1/auth/login",
                          json={"email": "ada@example.test", "password": PASSWORD})
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "account_suspended"
    assert REASON in error["message"]

    page = client.get("/signin")
    form = client.post("/signin", data={"email": "ada@example.test", "password": PASSWORD,
                                        "csrf_token": csrf_from(page.get_data(as_text=True))})
    text = form.get_data(as_text=True)
    assert form.status_code == 403
    assert "Payment for March &lt;bounced&gt;" in text


def test_a_suspended_user_is_mailed_the_reason(app, client, admin):
    user = make_user(app, "ada@example.test")
    _suspend(client, admin, user.id)
    with app.app_context():
        mail = (MailOutbox.select().where(MailOutbox.to_addr == "ada@example.test")
                .order_by(MailOutbox.created_at.desc()).first())
        assert User.get_by_id(user.id).status == "suspended"
    assert mail is not None
    assert "suspended" in mail.subject.lower()
    assert REASON in mail.body
