"""Webhooks against real receivers on 127.0.0.1, checked by the standardwebhooks package:
signatures, retries, 410, timeouts, redirects, Retry-After, rotation, redelivery, tests,
the five-day rule, isolation of slow endpoints, and the API's validation and tenancy."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from appliance.models import Event, Webhook, WebhookAttempt, WebhookDelivery
from appliance.services import clock, settings
from appliance.services.events import outbox
from appliance.services.webhooks import batches, deliveries, dispatcher, ssrf
from tests.factories import api, bearer, create_key, login, make_user
from tests.receivers import Answer, Receiver, allow_loopback, signed_by, verify_now


@pytest.fixture(autouse=True)
def loopback(monkeypatch):
    allow_loopback(monkeypatch)


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def create_webhook(client, auth, url, **fields) -> tuple[dict, str]:
    response = api(client, "POST", "/webhooks", auth, json={"url": url, **fields})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return body["webhook"], body["secret"]


def emit(app, user_id, type_="billing.credited", **data) -> str:
    with app.app_context():
        return outbox.emit(type_, user_id=user_id, data=data or {"amount": 100}).id


def deliver(app) -> int:
    with app.app_context():
        return batches.deliver_due()


def delivery_rows(app, webhook_id) -> list[WebhookDelivery]:
    with app.app_context():
        return list(WebhookDelivery.select().where(WebhookDelivery.webhook == webhook_id)
                    .order_by(WebhookDelivery.created_at, WebhookDelivery.id))


def test_a_delivery_is_signed_per_standard_webhooks(app, client, owner, owner_user, receiver):
    webhook, secret = create_webhook(client, owner, receiver.url,
                                     event_types=["api_key.created"])
    assert secret.startswith("whsec_") and webhook["status"] == "active"
    assert secret not in api(client, "GET", f"/webhooks/{webhook['id']}",
                             owner).get_data(as_text=True)
    _, key = create_key(client, owner, name="ci")
    assert deliver(app) == 1
    [request] = receiver.received
    body = verify_now(secret, request)  # the independent package accepts it
    assert body["type"] == "api_key.created"
    assert body["data"]["api_key"]["id"] == key["id"]
    assert set(body) == {"type", "timestamp", "data"}
    event_id = body and request.msg_id
    assert event_id.startswith("evt_")
    listed = api(client, "GET", f"/webhooks/{webhook['id']}/deliveries",
                 owner).get_json()["data"]
    assert [(d["status"], d["attempts"], d["message_id"]) for d in listed] == [
        ("succeeded", 1, event_id)]
    detail = api(client, "GET", f"/webhooks/{webhook['id']}/deliveries/{listed[0]['id']}",
                 owner).get_json()
    assert detail["payload"] == json.loads(request.body)
    assert [(a["number"], a["status_code"], a["response_excerpt"])
            for a in detail["attempt_log"]] == [(1, 200, "ok")]
    # Subscribed to one type only: other events are not sent.
    emit(app, owner_user.id)
    assert deliver(app) == 0


def test_a_500_is_retried_on_schedule_until_it_succeeds(app, client, owner, owner_user, receiver):
    clock.freeze(clock.now())
    webhook, secret = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(500, body=b"oops"), Answer(500))
    emit(app, owner_user.id)
    assert deliver(app) == 1
    [row] = delivery_rows(app, webhook["id"])
    assert row.status == "pending" and row.last_status_code == 500
    assert 4.5 <= (row.next_attempt_at - clock.now()).total_seconds() <= 5.5
    assert deliver(app) == 0  # not due yet
    clock.advance(dt.timedelta(seconds=6))
    assert deliver(app) == 1
    [row] = delivery_rows(app, webhook["id"])
    assert 270 <= (row.next_attempt_at - clock.now()).total_seconds() <= 330
    with app.app_context():
        assert Webhook.get_by_id(webhook["id"]).failing_since is not None
    clock.advance(dt.timedelta(seconds=331))
    assert deliver(app) == 1
    [row] = delivery_rows(app, webhook["id"])
    assert (row.status, row.attempts, row.last_status_code) == ("succeeded", 3, 200)
    assert len({r.msg_id for r in receiver.received}) == 1  # the same webhook-id each time
    assert all(signed_by(secret, r) for r in receiver.received)
    assert len({r.body for r in receiver.received}) == 1
    with app.app_context():
        assert Webhook.get_by_id(webhook["id"]).failing_since is None
    log = api(client, "GET", f"/webhooks/{webhook['id']}/deliveries/{row.id}",
              owner).get_json()["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert log[0]["response_excerpt"] == "oops" and log[0]["error"] == "HTTP 500"


def test_the_schedule_ends_with_a_failed_delivery(app, client, owner, owner_user, receiver):
    clock.freeze(clock.now())
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.default = Answer(500)
    emit(app, owner_user.id)
    for _ in range(len(deliveries.SCHEDULE)):
        assert deliver(app) == 1
        clock.advance(dt.timedelta(hours=11))
    [row] = delivery_rows(app, webhook["id"])
    assert (row.status, row.attempts) == ("failed", 8)
    assert deliver(app) == 0 and len(receiver.received) == 8


def test_a_410_disables_the_webhook_and_tells_the_owner(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(410))
    emit(app, owner_user.id)
    deliver(app)
    found = api(client, "GET", f"/webhooks/{webhook['id']}", owner).get_json()
    assert found["status"] == "disabled" and "410" in found["disabled_reason"]
    [row] = delivery_rows(app, webhook["id"])
    assert row.status == "failed" and row.attempts == 1
    told = api(client, "GET", "/events", owner,
               query_string={"type": "webhook.disabled"}).get_json()["data"]
    assert told[0]["data"]["webhook_id"] == webhook["id"]
    emit(app, owner_user.id)  # a disabled webhook gets nothing new
    assert len(delivery_rows(app, webhook["id"])) == 1
    resumed = api(client, "POST", f"/webhooks/{webhook['id']}/resume", owner)
    assert resumed.get_json()["status"] == "active"
    assert resumed.get_json()["disabled_reason"] is None


def test_five_days_of_failures_disable_the_webhook(app, client, owner, owner_user, receiver):
    clock.freeze(clock.now())
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.default = Answer(503)
    emit(app, owner_user.id)
    deliver(app)
    for _ in range(5):
        clock.advance(dt.timedelta(hours=25))
        emit(app, owner_user.id)
        deliver(app)
    signed_in = bearer(login(client, "owner@example.test"))  # the old token has expired
    found = api(client, "GET", f"/webhooks/{webhook['id']}", signed_in).get_json()
    assert found["status"] == "disabled" and "5 days" in found["disabled_reason"]
    assert all(r.status == "failed" for r in delivery_rows(app, webhook["id"]))
    with app.app_context():
        assert Event.select().where(Event.type == "webhook.disabled").count() == 1


def test_a_timeout_counts_as_a_failure(  # noqa: PLR0917
        app, client, owner, owner_user, receiver, monkeypatch):
    monkeypatch.setattr(deliveries, "TIMEOUT", 0.3)
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(200, delay=1.5))
    emit(app, owner_user.id)
    started = time.monotonic()
    deliver(app)
    assert time.monotonic() - started < 1.2
    [row] = delivery_rows(app, webhook["id"])
    assert row.status == "pending" and row.last_status_code is None
    assert "did not answer" in row.last_error


def test_redirects_are_not_followed(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(302, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}))
    emit(app, owner_user.id)
    deliver(app)
    assert [r.path for r in receiver.received] == ["/hook"]
    [row] = delivery_rows(app, webhook["id"])
    assert row.status == "pending" and row.last_status_code == 302
    assert "redirects are not followed" in row.last_error


def test_retry_after_is_honoured(app, client, owner, owner_user, receiver):
    clock.freeze(clock.now())
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(429, {"Retry-After": "120"}))
    emit(app, owner_user.id)
    deliver(app)
    [row] = delivery_rows(app, webhook["id"])
    assert (row.next_attempt_at - clock.now()) == dt.timedelta(seconds=120)
    date = (clock.now() + dt.timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    waited = deliveries.parse_retry_after(date, clock.now())
    assert dt.timedelta(minutes=59) < waited <= dt.timedelta(hours=1)
    assert deliveries.retry_delay(1, dt.timedelta(days=3)) == deliveries.MAX_RETRY_AFTER


def test_rotation_signs_with_both_secrets_during_the_grace_then_one(app, client, owner, owner_user,
                                                                   receiver):
    clock.freeze(clock.now())
    webhook, old = create_webhook(client, owner, receiver.url)
    rotated = api(client, "POST", f"/webhooks/{webhook['id']}/rotate-secret", owner,
                  json={"grace_seconds": 3600})
    assert rotated.status_code == 200
    new = rotated.get_json()["secret"]
    assert new != old and rotated.get_json()["webhook"]["previous_secret_valid_until"]
    emit(app, owner_user.id)
    deliver(app)
    first = receiver.received[-1]
    assert len(first.signatures()) == 2
    assert signed_by(old, first) and signed_by(new, first)
    clock.advance(dt.timedelta(hours=2))
    emit(app, owner_user.id)
    deliver(app)
    second = receiver.received[-1]
    assert len(second.signatures()) == 1
    assert signed_by(new, second) and not signed_by(old, second)
    signed_in = bearer(login(client, "owner@example.test"))  # the old token has expired
    too_long = api(client, "POST", f"/webhooks/{webhook['id']}/rotate-secret", signed_in,
                   json={"grace_seconds": 8 * 86400})
    assert too_long.status_code == 400
    assert too_long.get_json()["error"]["details"]["field"] == "grace_seconds"


def test_redelivery_keeps_the_webhook_id(app, client, owner, owner_user, receiver):
    webhook, secret = create_webhook(client, owner, receiver.url)
    emit(app, owner_user.id)
    deliver(app)
    [first] = delivery_rows(app, webhook["id"])
    response = api(client, "POST",
                   f"/webhooks/{webhook['id']}/deliveries/{first.id}/redeliver", owner)
    assert response.status_code == 202, response.get_json()
    again = response.get_json()
    assert again["id"] != first.id and again["trigger"] == "redelivery"
    assert again["message_id"] == first.msg_id
    deliver(app)
    assert [r.msg_id for r in receiver.received] == [first.msg_id, first.msg_id]
    assert receiver.received[0].body == receiver.received[1].body
    verify_now(secret, receiver.received[1])


def test_the_test_button_reports_the_outcome_and_changes_nothing(app, client, owner,
                                                                 receiver):
    webhook, secret = create_webhook(client, owner, receiver.url,
                                     event_types=["instance.ready"])
    tested = api(client, "POST", f"/webhooks/{webhook['id']}/test", owner)
    assert tested.status_code == 200, tested.get_json()
    result = tested.get_json()
    assert result["succeeded"] is True and result["status_code"] == 200
    assert verify_now(secret, receiver.received[0])["type"] == "webhook.test"
    receiver.answer(Answer(410))
    result = api(client, "POST", f"/webhooks/{webhook['id']}/test", owner).get_json()
    assert result["succeeded"] is False and result["status_code"] == 410
    assert result["delivery"]["attempt_log"][0]["status_code"] == 410
    found = api(client, "GET", f"/webhooks/{webhook['id']}", owner).get_json()
    assert found["status"] == "active" and found["failing_since"] is None
    assert deliver(app) == 0  # a test is one attempt, never retried


def test_paused_webhooks_queue_nothing_new_and_hold_what_was_queued(app, client, owner, owner_user,
                                                                    receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    emit(app, owner_user.id)
    paused = api(client, "POST", f"/webhooks/{webhook['id']}/pause", owner)
    assert paused.get_json()["status"] == "paused"
    emit(app, owner_user.id)
    assert deliver(app) == 0 and len(delivery_rows(app, webhook["id"])) == 1
    api(client, "POST", f"/webhooks/{webhook['id']}/resume", owner)
    assert deliver(app) == 1 and len(receiver.received) == 1


def _attempt_counts(app, webhook_id) -> tuple[int, int]:
    """(attempts the deliveries count, attempt rows logged) for a webhook."""
    rows = delivery_rows(app, webhook_id)
    with app.app_context():
        logged = WebhookAttempt.select().where(
            WebhookAttempt.delivery.in_([r.id for r in rows])).count()
    return sum(r.attempts for r in rows), logged


def test_a_failure_ends_a_batch_and_the_log_holds_only_what_was_sent(app, client, owner, owner_user,
                                                                     receiver):
    clock.freeze(clock.now())
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(200), Answer(500))
    for _ in range(6):
        emit(app, owner_user.id)
    with app.app_context():
        batch = batches.claim_batch(webhook["id"])
        assert len(batch) == 6
        outcomes = batches.send_batch(batch)
    assert [o.status_code for o in outcomes] == [200, 500]
    assert len(receiver.received) == 2
    assert _attempt_counts(app, webhook["id"]) == (2, 2)  # the rest of the chunk taken back
    rows = delivery_rows(app, webhook["id"])
    untouched = [r for r in rows if r.attempts == 0]
    assert len(untouched) == 4
    assert all(r.status == "pending" and r.lease_until is None for r in untouched)
    assert deliver(app) == 4 and len(receiver.received) == 6  # due again at once


def test_a_batch_sends_nothing_another_worker_took_after_its_lease_ran_out(app, client, owner,
                                                                          owner_user, receiver):
    clock.freeze(clock.now())
    webhook, _ = create_webhook(client, owner, receiver.url)
    for _ in range(3):
        emit(app, owner_user.id)
    with app.app_context():
        stalled = batches.claim_batch(webhook["id"])
        assert batches.claim_batch(webhook["id"]) is None  # leased
        clock.advance(deliveries.LEASE + dt.timedelta(seconds=1))
        other = batches.claim_batch(webhook["id"])
        assert len(stalled) == len(other) == 3
        assert len(batches.send_batch(other)) == 3
        assert batches.send_batch(stalled) == []
    assert len(receiver.received) == 3
    assert _attempt_counts(app, webhook["id"]) == (3, 3)
    assert {r.status for r in delivery_rows(app, webhook["id"])} == {"succeeded"}


def test_a_stopping_dispatcher_ends_a_batch_between_two_requests(app, client, owner, owner_user,
                                                                 receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    for _ in range(6):
        emit(app, owner_user.id)
    with app.app_context():
        batch = batches.claim_batch(webhook["id"])
        outcomes = batches.send_batch(batch,
                                               keep_going=lambda: not receiver.received)
    assert len(outcomes) == len(receiver.received) == 1
    assert _attempt_counts(app, webhook["id"]) == (1, 1)
    rest = [r for r in delivery_rows(app, webhook["id"]) if r.status == "pending"]
    assert len(rest) == 5 and all(r.lease_until is None and r.attempts == 0 for r in rest)


def test_pausing_a_webhook_stops_its_batch(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    for _ in range(3):
        emit(app, owner_user.id)
    with app.app_context():
        batch = batches.claim_batch(webhook["id"])
    api(client, "POST", f"/webhooks/{webhook['id']}/pause", owner)
    with app.app_context():
        assert batches.send_batch(batch) == []
    assert receiver.received == []
    rows = delivery_rows(app, webhook["id"])
    assert all(r.status == "pending" and r.lease_until is None and r.attempts == 0
               for r in rows)
    api(client, "POST", f"/webhooks/{webhook['id']}/resume", owner)
    assert deliver(app) == 3


def test_a_project_webhook_gets_only_that_projects_events(app, client, owner, owner_user, receiver):
    from tests.factories import create_project

    lab = create_project(client, owner, "Lab")
    other = create_project(client, owner, "Other")
    webhook, _ = create_webhook(client, owner, receiver.url, project_id=lab)
    assert webhook["project_id"] == lab
    for project in (lab, other):
        with app.app_context():
            outbox.emit("billing.credited", project_id=project, data={"amount": 1})
    emit(app, owner_user.id)  # an account event: not the project's
    deliver(app)
    assert [json.loads(r.body)["data"] for r in receiver.received] == [{"amount": 1}]


def test_a_slow_endpoint_does_not_delay_another(app, client, owner, owner_user, monkeypatch):
    monkeypatch.setattr(deliveries, "TIMEOUT", 5.0)
    slow, fast = Receiver(Answer(200, delay=2.0)), Receiver()
    try:
        create_webhook(client, owner, slow.url)
        create_webhook(client, owner, fast.url)
        running = dispatcher.Dispatcher(app, workers=4, per_endpoint=2)
        running.start()
        try:
            started = time.monotonic()
            for _ in range(6):
                emit(app, owner_user.id)
            deadline = started + 5
            while len(fast.received) < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(fast.received) == 6
            assert max(r.at for r in fast.received) - started < 1.0
            assert len(slow.received) <= 2  # at most two at a time to one endpoint
        finally:
            running.stop()
    finally:
        slow.close()
        fast.close()


def test_other_users_webhooks_do_not_exist_for_you(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    emit(app, owner_user.id)
    deliver(app)
    [row] = delivery_rows(app, webhook["id"])
    make_user(app, "outsider@example.test")
    outsider = bearer(login(client, "outsider@example.test"))
    one = f"/webhooks/{webhook['id']}"
    for method, path, body in [
        ("GET", one, None), ("PATCH", one, {"description": "x"}), ("DELETE", one, None),
        ("POST", one + "/pause", None), ("POST", one + "/resume", None),
        ("POST", one + "/rotate-secret", {}), ("POST", one + "/test", None),
        ("GET", one + "/deliveries", None), ("GET", f"{one}/deliveries/{row.id}", None),
        ("POST", f"{one}/deliveries/{row.id}/redeliver", None),
    ]:
        response = api(client, method, path, outsider, json=body)
        assert response.status_code == 404, (method, path)
        assert response.get_json()["error"]["code"] == "webhook_not_found"
    assert api(client, "GET", "/webhooks", outsider).get_json()["data"] == []
    assert len(receiver.received) == 1


@pytest.mark.parametrize("body, field, code", [
    ({"url": "ftp://example.com/x"}, "url", "webhook_invalid_url"),
    ({"url": "http://10.0.0.1/hook"}, "url", "webhook_invalid_url"),
    ({"url": "http://169.254.169.254/latest"}, "url", "webhook_invalid_url"),
    ({"url": "http://[::1]:8080/"}, "url", "webhook_invalid_url"),
    ({"url": "http://127.0.0.1:1/", "event_types": ["instance.exploded"]}, "event_types",
     "invalid_request"),
    ({"url": "http://127.0.0.1:1/", "event_types": []}, "event_types", "invalid_request"),
    ({"url": "http://127.0.0.1:1/", "description": "x" * 501}, "description",
     "invalid_request"),
    ({"url": "http://127.0.0.1:1/", "project_id": "prj_nope"}, "project_id",
     "project_not_found"),
    ({"url": "http://127.0.0.1:1/", "secret": "whsec_mine"}, "secret", "invalid_request"),
])
def test_bad_input_is_400_naming_the_field(client, owner, body, field, code):
    response = api(client, "POST", "/webhooks", owner, json=body)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["details"]["field"] == field and error["code"] == code


def test_lan_targets_need_the_operators_setting(app, client, owner):
    refused = api(client, "POST", "/webhooks", owner, json={"url": "http://10.0.0.1/"})
    assert refused.status_code == 400
    with app.app_context():
        settings.put("WEBHOOKS_ALLOW_PRIVATE", "true")
    create_webhook(client, owner, "http://10.0.0.1/")


def test_keys_need_the_webhook_scopes(client, owner, receiver):
    reader, _ = create_key(client, owner, scopes=["webhooks:read"])
    headers = {"X-API-Key": reader}
    assert api(client, "GET", "/webhooks", headers).status_code == 200
    response = api(client, "POST", "/webhooks", headers, json={"url": receiver.url})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"scope": "webhooks:write"}


def test_update_and_delete(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    one = f"/webhooks/{webhook['id']}"
    changed = api(client, "PATCH", one, owner,
                  json={"event_types": ["member.added", "instance.ready"],
                        "description": "CI hook"}).get_json()
    assert changed["event_types"] == ["instance.ready", "member.added"]
    assert changed["description"] == "CI hook"
    bad = api(client, "PATCH", one, owner, json={"url": "gopher://x"})
    assert bad.get_json()["error"]["details"]["field"] == "url"
    emit(app, owner_user.id, "member.added")
    assert api(client, "DELETE", one, owner).status_code == 204
    assert api(client, "GET", one, owner).status_code == 404
    assert delivery_rows(app, webhook["id"]) == []


STRICT_REFUSAL = ssrf._refusal  # production's check, kept before any test patches it


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.1",
                                     "64:ff9b::7f00:1", "2002:7f00:1::", "0.0.0.0",  # noqa: S104
                                     "fe80::1", "224.0.0.1"])
def test_names_resolving_to_unsafe_addresses_are_refused(client, owner, monkeypatch,
                                                         address):
    monkeypatch.setattr(ssrf, "_refusal", STRICT_REFUSAL)
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: ["93.184.215.14", address])
    response = api(client, "POST", "/webhooks", owner,
                   json={"url": "https://hooks.example.test/in"})
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "webhook_invalid_url" and error["details"]["field"] == "url"
    assert address in error["message"]


def test_a_name_that_later_resolves_somewhere_unsafe_fails_at_delivery(app, client, owner,
                                                                      owner_user, monkeypatch):
    monkeypatch.setattr(ssrf, "_refusal", STRICT_REFUSAL)
    answers = {"hooks.example.test": ["93.184.215.14"]}
    monkeypatch.setattr(ssrf, "resolve", lambda host, port: answers[host])
    webhook, _ = create_webhook(client, owner, "https://hooks.example.test/in")
    answers["hooks.example.test"] = ["169.254.169.254"]  # DNS rebinding
    emit(app, owner_user.id)
    deliver(app)
    [row] = delivery_rows(app, webhook["id"])
    assert row.status == "pending" and row.last_status_code is None
    assert "SSRF guard" in row.last_error and "metadata" in row.last_error


def test_a_redirect_to_loopback_is_not_followed(app, client, owner, owner_user, receiver):
    webhook, _ = create_webhook(client, owner, receiver.url)
    receiver.answer(Answer(307, {"Location": "http://127.0.0.1:8080/admin"}))
    emit(app, owner_user.id)
    deliver(app)
    assert len(receiver.received) == 1
    [row] = delivery_rows(app, webhook["id"])
    assert row.last_status_code == 307 and row.status == "pending"
