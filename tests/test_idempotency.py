"""Idempotency-Key on creating POSTs: replay, mismatch, in flight, nothing stored on failure."""

from __future__ import annotations

import datetime as dt
import threading

from appliance.errors import Conflict
from appliance.models import IdempotencyRecord, Project
from appliance.services import clock
from appliance.services.limits import idempotency
from tests.factories import api, bearer, create_key, key_auth, login, make_user


def _create(client, headers, key, name="Lab"):
    return api(client, "POST", "/projects", {**headers, "Idempotency-Key": key},
               json={"name": name})


def _project_count(app) -> int:
    with app.app_context():
        return Project.select().count()


def test_a_replay_returns_the_stored_status_and_body(app, client, owner):
    first = _create(client, owner, "create-lab-1")
    assert first.status_code == 201
    before = _project_count(app)
    again = _create(client, owner, "create-lab-1")
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _project_count(app) == before


def test_the_same_key_with_another_body_is_422(client, owner):
    assert _create(client, owner, "k").status_code == 201
    response = _create(client, owner, "k", name="Other")
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "idempotency_mismatch"


def test_the_same_key_on_another_route_is_422(client, owner):
    assert _create(client, owner, "k").status_code == 201
    response = api(client, "POST", "/api-keys", {**owner, "Idempotency-Key": "k"},
                   json={"name": "Lab"})
    assert response.status_code in (400, 422)  # invalid body: 400 before the key is looked at
    response = api(client, "POST", "/api-keys", {**owner, "Idempotency-Key": "k"},
                   json={"name": "Lab", "scopes": ["usage:read"]})
    assert response.status_code == 422


def test_a_request_still_in_flight_is_409(app, client, owner):
    user_id = api(client, "GET", "/auth/me", owner).get_json()["id"]
    body = b'{"name":"Lab"}'
    with app.app_context():
        idempotency.begin(user_id, "busy",
                          idempotency.fingerprint("POST", "/api/v1/projects", body))
    response = api(client, "POST", "/projects", {**owner, "Idempotency-Key": "busy"},
                   data=body, content_type="application/json")
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_in_progress"
    # A crashed request's record is taken over after the in-flight timeout.
    clock.freeze(clock.now() + idempotency.IN_FLIGHT_TIMEOUT + dt.timedelta(seconds=1))
    assert api(client, "POST", "/projects", {**owner, "Idempotency-Key": "busy"},
               data=body, content_type="application/json").status_code == 201


def test_concurrent_duplicates_run_once(app):
    """Eight threads claim one key at once: one runs, the rest are told it is in flight."""
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def claim():
        with app.app_context():
            barrier.wait()
            try:
                outcomes.append("claimed" if idempotency.begin("usr_x", "same", "f") is None
                                else "replayed")
            except Conflict:
                outcomes.append("conflict")

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["claimed"] + ["conflict"] * 7


def test_nothing_is_stored_for_an_invalid_request(app, client, owner):
    bad = api(client, "POST", "/projects", {**owner, "Idempotency-Key": "k"}, json={"name": ""})
    assert bad.status_code == 400
    with app.app_context():
        assert IdempotencyRecord.select().count() == 0
    assert _create(client, owner, "k").status_code == 201


def test_nothing_is_stored_when_the_service_refuses(app, client, owner):
    refused = _create(client, owner, "k", name="   ")  # the service refuses a blank name
    assert refused.status_code == 400
    with app.app_context():
        assert IdempotencyRecord.select().count() == 0
    assert _create(client, owner, "k", name="   ").status_code == 400


def test_keys_belong_to_one_account(app, client, owner):
    make_user(app, "other@example.test")
    other = bearer(login(client, "other@example.test"))
    mine = _create(client, owner, "shared-key").get_json()
    theirs = _create(client, other, "shared-key").get_json()
    assert mine["id"] != theirs["id"]


def test_an_api_key_does_not_replay_what_a_token_of_its_user_made(client, owner):
    """A record belongs to the credential that made it (tests/test_defects_auth.py)."""
    secret, _ = create_key(client, owner)
    first = _create(client, owner, "k").get_json()
    replay = _create(client, key_auth(secret), "k")
    assert replay.status_code == 422
    assert replay.get_json()["error"]["code"] == "idempotency_mismatch"
    assert _create(client, owner, "k").get_json() == first


def test_records_expire_after_24_hours(app, client, owner):
    first = _create(client, owner, "k").get_json()
    clock.freeze(clock.now() + idempotency.TTL + dt.timedelta(seconds=1))
    owner = bearer(login(client, "owner@example.test"))
    # the name is free again once the first is gone (names are unique per owner)
    assert api(client, "DELETE", f"/projects/{first['id']}", owner).status_code == 204
    second = _create(client, owner, "k").get_json()
    assert second["id"] != first["id"]
    with app.app_context():
        assert idempotency.purge_expired() == 0  # the expired one was replaced
        clock.freeze(clock.now() + idempotency.TTL + dt.timedelta(seconds=1))
        assert idempotency.purge_expired() == 1


def test_an_unusable_key_is_400(client, owner):
    response = api(client, "POST", "/projects", {**owner, "Idempotency-Key": "x" * 256},
                   json={"name": "Lab"})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "Idempotency-Key"


def test_the_document_lists_the_header_on_every_creating_post(client):
    document = client.get("/api/v1/openapi.json").get_json()
    creating = [(path, item["post"]) for path, item in document["paths"].items()
                if "post" in item and {"201", "202"} & set(item["post"]["responses"])
                and item["post"].get("security")]
    assert len(creating) >= 4
    for path, op in creating:
        names = [p["name"] for p in op.get("parameters", [])]
        assert "Idempotency-Key" in names, path
        assert "422" in op["responses"], path
