"""Signing in with a second factor over the JSON API."""

import datetime as dt

import pyotp
import pytest

from appliance.services import clock
from tests.factories import PASSWORD, bearer, login, make_user


@pytest.fixture(autouse=True)
def frozen_clock():
    clock.freeze(dt.datetime(2026, 11, 23, 12, 0, 5, tzinfo=dt.UTC))


def code(secret):
    return pyotp.TOTP(secret).at(clock.now())


def enrol(client, tokens):
    enrolment = client.post("/api/v1/auth/mfa/enroll", headers=bearer(tokens)).get_json()
    assert enrolment["otpauth_uri"].startswith("otpauth://totp/")
    assert enrolment["qr_svg"].lstrip().startswith("<svg")
    confirmed = client.post("/api/v1/auth/mfa/confirm", headers=bearer(tokens),
                            json={"code": code(enrolment["secret"])})
    assert confirmed.status_code == 200
    recovery = confirmed.get_json()["recovery_codes"]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    return enrolment["secret"], recovery


def test_login_with_mfa_needs_the_challenge(app, client):
    make_user(app, "ada@example.test")
    secret, _ = enrol(client, login(client, "ada@example.test"))
    assert client.get("/api/v1/auth/me", headers=bearer(login_first(client))).status_code == 401
    response = client.post("/api/v1/auth/login",
                           json={"email": "ada@example.test", "password": PASSWORD})
    body = response.get_json()
    assert body["mfa_required"] is True and body["mfa_token"]
    assert body["access_token"] is None and body["refresh_token"] is None

    clock.advance(dt.timedelta(seconds=30))
    done = client.post("/api/v1/auth/mfa/challenge",
                       json={"mfa_token": body["mfa_token"], "code": code(secret)})
    assert done.status_code == 200
    tokens = done.get_json()
    me = client.get("/api/v1/auth/me", headers=bearer(tokens)).get_json()
    assert me["mfa_enabled"] is True

    replay = client.post("/api/v1/auth/mfa/challenge",
                         json={"mfa_token": body["mfa_token"], "code": code(secret)})
    assert replay.status_code == 400
    assert replay.get_json()["error"]["code"] == "mfa_code_invalid"


def login_first(client):
    """A login that stops at the MFA step has no access token to offer."""
    body = client.post("/api/v1/auth/login",
                       json={"email": "ada@example.test", "password": PASSWORD}).get_json()
    return {"access_token": body.get("access_token") or "none"}


def test_a_recovery_code_signs_in_once(app, client):
    make_user(app, "ada@example.test")
    _, recovery = enrol(client, login(client, "ada@example.test"))
    for expected in (200, 400):
        mfa_token = client.post("/api/v1/auth/login", json={
            "email": "ada@example.test", "password": PASSWORD}).get_json()["mfa_token"]
        response = client.post("/api/v1/auth/mfa/challenge",
                               json={"mfa_token": mfa_token, "code": recovery[0]})
        assert response.status_code == expected


def test_an_mfa_token_expires_and_cannot_be_used_as_an_access_token(app, client):
    make_user(app, "ada@example.test")
    secret, _ = enrol(client, login(client, "ada@example.test"))
    mfa_token = client.post("/api/v1/auth/login", json={
        "email": "ada@example.test", "password": PASSWORD}).get_json()["mfa_token"]
    as_access = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {mfa_token}"})
    assert as_access.status_code == 401
    clock.advance(dt.timedelta(minutes=6))
    expired = client.post("/api/v1/auth/mfa/challenge",
                          json={"mfa_token": mfa_token, "code": code(secret)})
    assert expired.status_code == 401


def test_wrong_codes_are_throttled(make_app):
    app = make_app(LOGIN_FAILURES_PER_ACCOUNT=3)
    client = app.test_client()
    make_user(app, "ada@example.test")
    enrol(client, login(client, "ada@example.test"))
    mfa_token = client.post("/api/v1/auth/login", json={
        "email": "ada@example.test", "password": PASSWORD}).get_json()["mfa_token"]
    statuses = [client.post("/api/v1/auth/mfa/challenge",
                            json={"mfa_token": mfa_token, "code": "000000"}).status_code
                for _ in range(4)]
    assert statuses == [400, 400, 400, 429]


def test_disabling_mfa_needs_password_and_code(app, client):
    make_user(app, "ada@example.test")
    tokens = login(client, "ada@example.test")
    secret, _ = enrol(client, tokens)
    clock.advance(dt.timedelta(seconds=30))
    wrong = client.post("/api/v1/auth/mfa/disable", headers=bearer(tokens),
                        json={"password": "not the password", "code": code(secret)})
    assert wrong.status_code == 400
    assert wrong.get_json()["error"]["details"]["field"] == "password"
    ok = client.post("/api/v1/auth/mfa/disable", headers=bearer(tokens),
                     json={"password": PASSWORD, "code": code(secret)})
    assert ok.status_code == 204
    assert login(client, "ada@example.test")["mfa_required"] is False
