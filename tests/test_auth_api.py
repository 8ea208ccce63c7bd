"""Accounts over the JSON API, against the real app and database."""

import base64
import datetime as dt
import json

import jwt
import pytest

from appliance.models import AuthSession, EmailToken, User
from appliance.services import clock
from tests.factories import PASSWORD, bearer, last_mail, login, make_user, token_from_mail


def signup(client, email="new@example.test", password=PASSWORD, **extra):
    return client.post("/api/v1/auth/signup",
                       json={"email": email, "password": password, **extra})


def error_code(response):
    return response.get_json()["error"]["code"]


# signup and verification

def test_signup_creates_an_unverified_user_and_mails_a_link(app, client):
    response = signup(client, "Ada@Example.TEST", display_name="Ada")
    assert response.status_code == 201
    user = response.get_json()["user"]
    assert user["email"] == "ada@example.test"
    assert user["email_verified"] is False
    assert user["id"].startswith("usr_")
    mail = last_mail(app, "ada@example.test")
    assert mail.status == "held"  # no SMTP configured: kept for the admin
    token = token_from_mail(app, "ada@example.test", "/verify-email")
    with app.app_context():  # only the hash is stored
        assert not EmailToken.select().where(EmailToken.token_hash == token).exists()

    verified = client.post("/api/v1/auth/verify-email", json={"token": token})
    assert verified.status_code == 200
    assert verified.get_json()["email_verified"] is True
    again = client.post("/api/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400 and error_code(again) == "token_invalid"


def test_a_verification_link_expires(app, client):
    signup(client)
    token = token_from_mail(app, "new@example.test", "/verify-email")
    clock.advance(dt.timedelta(hours=49))
    response = client.post("/api/v1/auth/verify-email", json={"token": token})
    assert error_code(response) == "token_expired"


def test_a_duplicate_email_is_409(client):
    assert signup(client).status_code == 201
    response = signup(client, "NEW@example.test")
    assert response.status_code == 409 and error_code(response) == "email_taken"


@pytest.mark.parametrize("password, rule", [
    ("short", "password_too_short"),
    ("x" * 129, "password_too_long"),
    ("password123", "password_too_common"),
    ("aaaaaaaaaaaa", "password_too_common"),
    ("new@example.test!", "password_contains_email"),
])
def test_weak_passwords_are_refused_naming_the_rule(client, password, rule):
    response = signup(client, password=password)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == rule
    assert error["details"]["field"] == "password"


def test_a_64_character_password_is_accepted_and_an_absurd_one_refused(client):
    assert signup(client, password="Zq7" + "x9Lm" * 15 + "!").status_code == 201
    response = signup(client, "other@example.test", password="y" * 5000)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "password"


def test_signup_can_be_closed(make_app):
    client = make_app(SIGNUP="closed").test_client()
    response = signup(client)
    assert response.status_code == 403 and error_code(response) == "signup_disabled"


def test_invite_only_signup_needs_a_valid_invitation(make_app):
    from appliance.models import Invite
    from appliance.services.ids import hash_token

    app = make_app(SIGNUP="invite")
    client = app.test_client()
    assert error_code(signup(client)) == "invite_required"
    with app.app_context():
        Invite.create(id="inv_1", code_hash=hash_token("join-us"), created_at=clock.now(),
                      expires_at=clock.now() + dt.timedelta(days=1))
    assert error_code(signup(client, invite_code="wrong")) == "invite_invalid"
    assert signup(client, invite_code="join-us").status_code == 201
    assert error_code(signup(client, "b@example.test", invite_code="join-us")) == "invite_invalid"


# sign-in, tokens and sessions

def test_login_returns_tokens_and_me_answers(app, client):
    make_user(app, "ada@example.test", display_name="Ada")
    response = client.post("/api/v1/auth/login",
                           json={"email": "ada@example.test", "password": PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["mfa_required"] is False and body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["refresh_token"].startswith("rt_")
    cookie = response.headers["Set-Cookie"]
    assert "appliance_refresh=" in cookie and "HttpOnly" in cookie
    me = client.get("/api/v1/auth/me", headers=bearer(body))
    assert me.status_code == 200 and me.get_json()["display_name"] == "Ada"


def test_a_wrong_password_is_401_and_the_same_as_an_unknown_account(app, client):
    make_user(app, "ada@example.test")
    wrong = client.post("/api/v1/auth/login", json={"email": "ada@example.test",
                                                     "password": "wrong password!"})
    unknown = client.post("/api/v1/auth/login", json={"email": "nobody@example.test",
                                                       "password": "wrong password!"})
    assert wrong.status_code == unknown.status_code == 401
    assert error_code(wrong) == error_code(unknown) == "invalid_credentials"


def test_failed_logins_are_throttled_per_account(make_app):
    app = make_app(LOGIN_FAILURES_PER_ACCOUNT=3)
    client = app.test_client()
    make_user(app, "ada@example.test")
    for _ in range(3):
        client.post("/api/v1/auth/login",
                    json={"email": "ada@example.test", "password": "nope-nope"})
    response = client.post("/api/v1/auth/login",
                           json={"email": "ada@example.test", "password": PASSWORD})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    clock.advance(dt.timedelta(minutes=16))
    assert client.post("/api/v1/auth/login", json={"email": "ada@example.test",
                                                    "password": PASSWORD}).status_code == 200


def test_failed_logins_are_throttled_per_address(make_app):
    app = make_app(LOGIN_FAILURES_PER_IP=4)
    client = app.test_client()
    for n in range(4):
        client.post("/api/v1/auth/login", json={"email": f"u{n}@example.test",
                                                 "password": "nope-nope"})
    response = client.post("/api/v1/auth/login", json={"email": "u9@example.test",
                                                        "password": "nope-nope"})
    assert response.status_code == 429


def test_a_suspended_account_is_403(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    with app.app_context():
        User.update(status="suspended", suspended_reason="unpaid").execute()
    response = client.post("/api/v1/auth/login",
                           json={"email": "ada@example.test", "password": PASSWORD})
    assert response.status_code == 403 and error_code(response) == "account_suspended"
    assert error_code(client.get("/api/v1/auth/me", headers=bearer(tokens))) == "account_suspended"


def test_refresh_rotates_and_reuse_revokes_the_family(app, client):
    make_user(app, "ada@example.test")
    first = login(client, "ada@example.test")
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    second = second.get_json()
    assert second["refresh_token"] != first["refresh_token"]
    assert client.get("/api/v1/auth/me", headers=bearer(second)).status_code == 200

    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401 and error_code(reused) == "refresh_token_reused"
    # the whole family is gone: the newest tokens no longer work either
    assert client.post("/api/v1/auth/refresh",
                       json={"refresh_token": second["refresh_token"]}).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(second)).status_code == 401


def test_refresh_works_from_the_cookie(app, client):
    make_user(app, "ada@example.test")
    login(client, "ada@example.test")  # the test client keeps the cookie
    assert client.post("/api/v1/auth/refresh", json={}).status_code == 200


def test_logout_revokes_the_session(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    assert client.post("/api/v1/auth/logout", headers=bearer(tokens)).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(tokens)).status_code == 401
    assert client.post("/api/v1/auth/refresh",
                       json={"refresh_token": tokens["refresh_token"]}).status_code == 401


def test_an_access_token_expires_after_15_minutes(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    clock.advance(dt.timedelta(minutes=15, seconds=1))
    response = client.get("/api/v1/auth/me", headers=bearer(tokens))
    assert response.status_code == 401 and error_code(response) == "token_expired"


def _forge(app, claims_change=None, header_change=None, key=None):
    """An access token like ours, with changes, signed with our real key unless given."""
    from appliance.services.accounts import sessions

    now = int(clock.now().timestamp())
    claims = {"iss": "appliance", "aud": "appliance-api", "sub": "usr_x", "sid": "ses_x",
              "iat": now, "exp": now + 600}
    claims.update(claims_change or {})
    headers = {"typ": "at+jwt", **(header_change or {})}
    with app.app_context():
        key = key or sessions._signing_key(claims["aud"])
        return jwt.encode(claims, key, algorithm="HS256", headers=headers)


def test_tampered_alg_none_wrong_audience_and_wrong_type_tokens_are_401(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    header, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "usr_someone_else"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"at+jwt"}').rstrip(b"=").decode()
    with app.app_context():
        user_id = User.get().id
    candidates = {
        "tampered": f"{header}.{forged_payload}.{signature}",
        "alg_none": f"{none_header}.{payload}.",
        "wrong_audience": _forge(app, {"aud": "someone-else", "sub": user_id}),
        "wrong_type": _forge(app, {"sub": user_id}, {"typ": "JWT"}),
        "wrong_key": _forge(app, {"sub": user_id}, key=b"k" * 32),
        "garbage": "not-a-token",
    }
    for name, token in candidates.items():
        response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
        assert response.get_json()["error"]["request_id"], name


def test_no_token_is_401_with_www_authenticate(client):
    response = client.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_sessions_are_listed_and_revoked(app, client):
    make_user(app, "ada@example.test")
    phone = login(client, "ada@example.test")
    laptop = client.post("/api/v1/auth/login", json={"email": "ada@example.test",
                                                      "password": PASSWORD},
                         headers={"User-Agent": "Laptop/1.0"}).get_json()
    listed = client.get("/api/v1/auth/sessions", headers=bearer(laptop)).get_json()["data"]
    assert len(listed) == 2
    current = [s for s in listed if s["current"]]
    assert len(current) == 1 and current[0]["user_agent"] == "Laptop/1.0"
    other = next(s for s in listed if not s["current"])
    assert client.delete(f"/api/v1/auth/sessions/{other['id']}",
                         headers=bearer(laptop)).status_code == 204
    assert client.get("/api/v1/auth/me", headers=bearer(phone)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(laptop)).status_code == 200


def test_a_user_cannot_see_or_revoke_another_users_session(app, client):
    make_user(app, "ada@example.test")
    make_user(app, "bob@example.test")
    ada = login(client, "ada@example.test")
    bob = login(client, "bob@example.test")
    bob_session = client.get("/api/v1/auth/sessions", headers=bearer(bob)).get_json()["data"][0]
    response = client.delete(f"/api/v1/auth/sessions/{bob_session['id']}", headers=bearer(ada))
    assert response.status_code == 404
    ada_sessions = client.get("/api/v1/auth/sessions", headers=bearer(ada)).get_json()["data"]
    assert {s["id"] for s in ada_sessions}.isdisjoint({bob_session["id"]})


# passwords

def test_forgot_password_answers_the_same_with_or_without_an_account(app, client):
    make_user(app, "ada@example.test")
    known = client.post("/api/v1/auth/password/forgot", json={"email": "ada@example.test"})
    unknown = client.post("/api/v1/auth/password/forgot", json={"email": "no@example.test"})
    assert known.status_code == unknown.status_code == 200
    assert known.get_json() == unknown.get_json()
    assert last_mail(app, "ada@example.test") is not None
    assert last_mail(app, "no@example.test") is None


def test_reset_password_is_single_use_and_ends_every_session(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    client.post("/api/v1/auth/password/forgot", json={"email": "ada@example.test"})
    token = token_from_mail(app, "ada@example.test", "/reset-password")
    new = "a brand new passphrase"
    response = client.post("/api/v1/auth/password/reset", json={"token": token, "password": new})
    assert response.status_code == 200
    assert client.get("/api/v1/auth/me", headers=bearer(tokens)).status_code == 401
    assert login(client, "ada@example.test", new)["access_token"]
    again = client.post("/api/v1/auth/password/reset", json={"token": token, "password": new})
    assert error_code(again) == "token_invalid"


def test_a_reset_link_expires_after_an_hour(app, client):
    make_user(app, "ada@example.test")
    client.post("/api/v1/auth/password/forgot", json={"email": "ada@example.test"})
    token = token_from_mail(app, "ada@example.test", "/reset-password")
    clock.advance(dt.timedelta(minutes=61))
    response = client.post("/api/v1/auth/password/reset",
                           json={"token": token, "password": "a brand new passphrase"})
    assert error_code(response) == "token_expired"


def test_change_password_needs_the_current_one_and_ends_other_sessions(app, client):
    make_user(app, "ada@example.test")
    other = login(client, "ada@example.test")
    this = login(client, "ada@example.test")
    wrong = client.post("/api/v1/auth/password/change", headers=bearer(this),
                        json={"current_password": "not it at all", "new_password": "x" * 20})
    assert wrong.status_code == 400 and error_code(wrong) == "wrong_password"
    response = client.post("/api/v1/auth/password/change", headers=bearer(this),
                           json={"current_password": PASSWORD,
                                 "new_password": "another long passphrase"})
    assert response.status_code == 200 and response.get_json()["sessions_ended"] == 1
    assert client.get("/api/v1/auth/me", headers=bearer(other)).status_code == 401
    assert client.get("/api/v1/auth/me", headers=bearer(this)).status_code == 200


def test_passwords_are_stored_with_argon2id_at_owasp_parameters(app):
    user = make_user(app, "ada@example.test")
    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert PASSWORD not in user.password_hash


# profile

def test_an_email_change_needs_the_password_and_a_confirmation(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    refused = client.patch("/api/v1/auth/me", headers=bearer(tokens),
                           json={"email": "ada@new.example"})
    assert refused.status_code == 400 and error_code(refused) == "wrong_password"
    response = client.patch("/api/v1/auth/me", headers=bearer(tokens),
                            json={"email": "ada@new.example", "current_password": PASSWORD,
                                  "display_name": "Ada L."})
    assert response.status_code == 200
    body = response.get_json()
    assert body["verification_sent"] is True
    assert body["user"]["email"] == "ada@example.test"  # not before it is confirmed
    assert body["user"]["display_name"] == "Ada L."
    token = token_from_mail(app, "ada@new.example", "/verify-email")
    assert client.post("/api/v1/auth/verify-email", json={"token": token}).status_code == 200
    me = client.get("/api/v1/auth/me", headers=bearer(tokens)).get_json()
    assert me["email"] == "ada@new.example"


def test_resend_verification(app, client):
    make_user(app, "ada@example.test", verified=False)
    tokens = login(client, "ada@example.test")
    response = client.post("/api/v1/auth/resend-verification", headers=bearer(tokens))
    assert response.status_code == 202
    assert token_from_mail(app, "ada@example.test", "/verify-email")
    with app.app_context():
        assert AuthSession.select().count() == 1


@pytest.mark.parametrize("email", ["a\n@b.cd", "a,b@c.de", "a b@c.de", "<a@b.cd>", "a@b"])
def test_an_address_mail_cannot_reach_is_refused_before_anything_is_stored(app, client, email):
    response = signup(client, email)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "email"
    with app.app_context():
        assert User.select().count() == 0


def test_a_refused_email_change_changes_nothing(app, client):
    make_user(app, "ada@example.test", display_name="Ada")
    tokens = login(client, "ada@example.test")
    response = client.patch("/api/v1/auth/me", headers=bearer(tokens), json={
        "email": "a,b@c.de", "current_password": PASSWORD, "display_name": "New"})
    assert response.status_code == 400
    assert client.get("/api/v1/auth/me", headers=bearer(tokens)).get_json()["display_name"] == "Ada"


def test_forgot_password_does_not_wait_for_the_mail_server(make_app):
    """The reset mail goes out in the background, so the answer takes the same time
    whether or not the account exists, however slow the SMTP server is."""
    import time

    from appliance.models import MailOutbox
    from tests.conftest import free_port

    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=free_port(), SMTP_SECURITY="none")
    make_user(app, "ada@example.test")
    response = app.test_client().post("/api/v1/auth/password/forgot",
                                      json={"email": "ada@example.test"})
    assert response.status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with app.app_context():
            row = MailOutbox.get(MailOutbox.to_addr == "ada@example.test")
        if row.status != "queued":
            break
        time.sleep(0.05)
    assert row.status == "failed" and row.attempts == 1  # nobody listens on that port


def test_an_unverified_account_cannot_create_billable_resources(app):
    from appliance.errors import Forbidden
    from appliance.services.accounts import users

    unverified = make_user(app, "new@example.test", verified=False)
    verified = make_user(app, "old@example.test")
    with app.app_context():
        with pytest.raises(Forbidden) as refused:
            users.require_verified(unverified)
        assert refused.value.code == "email_not_verified" and refused.value.status == 403
        users.require_verified(verified)
