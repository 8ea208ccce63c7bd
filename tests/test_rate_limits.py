"""Rate limits per API key, per user and per address on sign-in endpoints, with headers."""

from __future__ import annotations

import datetime as dt
import re

from appliance.services import clock
from tests.factories import PASSWORD, api, bearer, create_key, key_auth, login, make_user

HEADER = re.compile(r'"(\w+)";r=(\d+);t=(\d+)')


def _remaining(response) -> int:
    return int(HEADER.fullmatch(response.headers["RateLimit"]).group(2))


def test_a_key_has_its_own_limit_and_429_says_when_to_retry(app, client):
    clock.freeze(dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC))
    make_user(app, "owner@example.test")
    secret, _ = create_key(client, bearer(login(client, "owner@example.test")),
                           rate_limit_rpm=3)
    responses = [api(client, "GET", "/projects", key_auth(secret)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [_remaining(r) for r in responses] == [2, 1, 0]
    assert responses[0].headers["RateLimit-Policy"] == '"key";q=3;w=60'
    clock.advance(dt.timedelta(seconds=20))
    limited = api(client, "GET", "/projects", key_auth(secret))
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert limited.headers["Retry-After"] == "40"
    assert limited.headers["RateLimit-Policy"] == '"key";q=3;w=60'
    assert limited.headers["RateLimit"] == '"key";r=0;t=40'
    clock.advance(dt.timedelta(seconds=41))
    assert api(client, "GET", "/projects", key_auth(secret)).status_code == 200


def test_keys_without_their_own_limit_get_the_default(make_app):
    app = make_app(RATE_LIMIT_KEY_PER_MINUTE=2)
    client = app.test_client()
    make_user(app, "owner@example.test")
    secret, _ = create_key(client, bearer(login(client, "owner@example.test")))
    assert [api(client, "GET", "/projects", key_auth(secret)).status_code
            for _ in range(3)] == [200, 200, 429]


def test_each_key_counts_separately_from_its_owner(make_app):
    app = make_app(RATE_LIMIT_KEY_PER_MINUTE=1, RATE_LIMIT_USER_PER_MINUTE=3)
    client = app.test_client()
    make_user(app, "owner@example.test")
    owner = bearer(login(client, "owner@example.test"))
    first, _ = create_key(client, owner)  # the owner's first counted request
    second, _ = create_key(client, owner)  # ... and second
    assert api(client, "GET", "/projects", key_auth(first)).status_code == 200
    assert api(client, "GET", "/projects", key_auth(second)).status_code == 200
    assert api(client, "GET", "/projects", key_auth(first)).status_code == 429
    assert api(client, "GET", "/projects", owner).status_code == 200  # third
    user_limited = api(client, "GET", "/projects", owner)
    assert user_limited.status_code == 429
    assert user_limited.headers["RateLimit-Policy"] == '"user";q=3;w=60'


def test_error_responses_of_limited_routes_carry_the_headers(client, app):
    make_user(app, "owner@example.test")
    owner = bearer(login(client, "owner@example.test"))
    response = api(client, "GET", "/projects/prj_missing", owner)
    assert response.status_code == 404
    assert "RateLimit" in response.headers and "RateLimit-Policy" in response.headers


def test_sign_in_endpoints_are_limited_per_address(make_app):
    app = make_app(RATE_LIMIT_AUTH_PER_MINUTE=3)
    client = app.test_client()
    make_user(app, "owner@example.test")
    body = {"email": "owner@example.test", "password": PASSWORD}
    statuses = [client.post("/api/v1/auth/login", json=body).status_code for _ in range(2)]
    forgot = client.post("/api/v1/auth/password/forgot", json={"email": "x@example.test"})
    assert statuses + [forgot.status_code] == [200, 200, 200]
    assert forgot.headers["RateLimit-Policy"] == '"auth";q=3;w=60'
    limited = client.post("/api/v1/auth/login", json=body)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    # Another address is not affected.
    other = client.post("/api/v1/auth/login", json=body,
                        environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 200


def test_unlimited_routes_carry_no_headers(client):
    response = client.get("/api/v1/health")
    assert "RateLimit" not in response.headers
