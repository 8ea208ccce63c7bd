"""A signed-in request (access token) authenticates about as cheaply as an API key: its
signature is verified once per token, its session read through the authorization cache,
and its last-seen written at most once a minute - while a revoked session, a suspended
account or a changed profile still shows on the very next request."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from appliance.services import clock
from tests.factories import api, bearer, login, make_user


@pytest.fixture
def queries(caplog):
    """The SQL statements the appliance sends while the test runs (peewee logs each)."""
    caplog.set_level(logging.DEBUG, logger="peewee")

    def taken() -> list[str]:
        # peewee logs each statement as the tuple (sql, params)
        found = [r.msg[0] if isinstance(r.msg, tuple) else r.getMessage()
                 for r in caplog.records if r.name == "peewee"]
        caplog.clear()
        return found
    return taken


def test_repeated_token_requests_neither_write_nor_reread_the_session(app, client, queries):
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    assert api(client, "GET", "/auth/me", token).status_code == 200
    queries()
    clock.freeze(clock.now())
    for _ in range(20):
        assert api(client, "GET", "/auth/me", token).status_code == 200
    sent = queries()
    assert not [q for q in sent if q.lstrip().upper().startswith(("UPDATE", "INSERT"))], sent
    assert not [q for q in sent if 'FROM "auth_session"' in q], sent


def test_a_session_is_touched_once_a_minute(app, client, queries):
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    start = clock.now()
    clock.freeze(start)
    api(client, "GET", "/auth/me", token)
    queries()
    clock.freeze(start + dt.timedelta(seconds=61))
    for _ in range(5):
        assert api(client, "GET", "/auth/me", token).status_code == 200
    touched = [q for q in queries() if q.lstrip().upper().startswith("UPDATE")
               and '"auth_session"' in q]
    assert len(touched) == 1, touched


def test_a_revoked_session_is_refused_on_the_next_request(app, client):
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    other = bearer(login(client, "ada@example.test"))
    listed = api(client, "GET", "/auth/sessions", token).get_json()["data"]  # now cached
    first = next(s["id"] for s in listed if s["current"])
    revoked = api(client, "DELETE", f"/auth/sessions/{first}", other)
    assert revoked.status_code == 204, revoked.get_json()
    refused = api(client, "GET", "/auth/me", token)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "session_ended"


def test_a_changed_profile_shows_on_the_next_request(app, client):
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    assert api(client, "GET", "/auth/me", token).status_code == 200  # now cached
    changed = api(client, "PATCH", "/auth/me", token, json={"display_name": "Ada L."})
    assert changed.status_code == 200, changed.get_json()
    assert api(client, "GET", "/auth/me", token).get_json()["display_name"] == "Ada L."


def test_an_expired_token_is_refused_though_its_signature_was_checked_before(app, client):
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    assert api(client, "GET", "/auth/me", token).status_code == 200
    clock.freeze(clock.now() + dt.timedelta(hours=2))
    refused = api(client, "GET", "/auth/me", token)
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "token_expired"


def test_dashboard_pages_do_not_reread_the_session_either(app, queries):
    from tests.factories import Browser
    make_user(app, "ada@example.test")
    ada = Browser(app, "ada@example.test")
    ada.page("/account")
    queries()
    clock.freeze(clock.now())
    for _ in range(5):
        ada.page("/account")
    sent = queries()
    assert not [q for q in sent if '"token_hash" = ?' in q], sent  # the cookie's lookup


def test_a_signed_out_dashboard_session_is_refused_on_the_next_page(app):
    from tests.factories import Browser
    make_user(app, "ada@example.test")
    ada = Browser(app, "ada@example.test")
    ada.page("/account")  # now cached
    assert ada.post("/signout").status_code in (302, 303)
    assert ada.get("/account").status_code in (302, 303)  # to the sign-in page
