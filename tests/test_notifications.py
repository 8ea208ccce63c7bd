"""In-app notifications made from events: for the right people, in the event's
transaction; read, read-all and counts; nobody else's; email for the important ones."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance.db import database
from appliance.models import Event, Job, MailOutbox, Notification
from appliance.services import clock
from appliance.services.billing import ledger
from appliance.services.events import notifications, outbox
from tests.factories import (
    api,
    bearer,
    create_instance,
    create_key,
    csrf_from,
    fake_catalog,
    key_auth,
    login,
    make_user,
    run_jobs,
    sign_in,
)
from tests.test_mail import SmtpServers, smtp_settings


@pytest.fixture
def team(owner_user, member_user, viewer_user, outsider_user,  # noqa: PLR0917
         owner, member, viewer, outsider, owner_project):
    """The standing people of tests/conftest.py: headers by name, ids as `<name>_id`, and
    the owner's default project, which the member and the viewer belong to."""
    return {"owner": owner, "member": member, "viewer": viewer, "outsider": outsider,
            "owner_id": owner_user.id, "member_id": member_user.id,
            "viewer_id": viewer_user.id, "outsider_id": outsider_user.id,
            "project": owner_project}


@pytest.fixture
def smtp_servers():
    servers = SmtpServers()
    yield servers
    servers.stop_all()


def _listed(client, headers, **query) -> list[dict]:
    response = api(client, "GET", "/notifications", headers, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def _unread(client, headers) -> int:
    response = api(client, "GET", "/notifications/unread-count", headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["unread"]


def _emit(app, type: str, **kwargs) -> Event:
    with app.app_context(), database.connection_context(), database.atomic():
        return outbox.emit(type, **kwargs)


def _grant_then_spend(app, user_id: str) -> None:
    """A grant of 10.00, then 7.00 taken: the balance falls below a 5.00 alert."""
    with app.app_context(), database.connection_context():
        ledger.post(user_id, "grant", 1000, f"grant-{user_id}")
        ledger.post(user_id, "adjustment", -700, f"spend-{user_id}")


def test_a_ready_instance_tells_who_created_it_and_the_project_owner(app, client, team):
    catalog = fake_catalog(app)
    instance = create_instance(app, client, team["member"], team["project"], catalog)
    for who in ("member", "owner"):
        found = _listed(client, team[who])
        assert [n["type"] for n in found] == ["instance.ready"], who
        assert found[0]["title"] == "web-1 is running"
        assert found[0]["link"] == f"/projects/{team['project']}/instances/{instance['id']}"
        assert found[0]["read"] is False and found[0]["event_id"].startswith("evt_")
        assert _unread(client, team[who]) == 1
    assert _listed(client, team["viewer"]) == []
    assert _listed(client, team["outsider"]) == []


def test_a_failed_job_tells_its_starter_and_the_owner_and_a_failed_create_only_once(
        app, client, team):
    catalog = fake_catalog(app)
    instance = create_instance(app, client, team["member"], team["project"], catalog)
    with app.app_context():
        job = Job.get(Job.instance == instance["id"])
    _emit(app, "job.failed", project_id=team["project"], data={"job": {
        "id": job.id, "type": "instance.stop", "instance_id": instance["id"],
        "error": "The engine did not answer"}})
    _emit(app, "job.failed", project_id=team["project"], data={"job": {
        "id": job.id, "type": "instance.create", "instance_id": instance["id"],
        "error": "told by instance.failed instead"}})
    for who in ("member", "owner"):
        found = _listed(client, team[who])
        assert [n["type"] for n in found] == ["job.failed", "instance.ready"], who
        assert found[0]["title"] == "Stop failed"
        assert found[0]["body"] == "The engine did not answer"
    assert _listed(client, team["viewer"]) == []


def test_someone_no_longer_a_member_is_not_told(app, client, team):
    catalog = fake_catalog(app)
    instance = create_instance(app, client, team["member"], team["project"], catalog,
                               run=False)
    removed = api(client, "DELETE", f"/projects/{team['project']}/members/{team['member_id']}",
                  team["owner"])
    assert removed.status_code == 204, removed.get_json()
    run_jobs(app)
    assert _listed(client, team["member"]) == []
    assert [n["type"] for n in _listed(client, team["owner"])] == ["instance.ready"]
    assert instance["id"]


def test_billing_and_account_events_tell_the_account(app, client, team):
    owner = team["owner_id"]
    _emit(app, "billing.grace_started", user_id=owner,
          data={"currency": "EUR", "grace_ends_at": "2025-02-03T12:00:00Z"})
    _emit(app, "billing.suspended", user_id=owner,
          data={"balance": -20, "currency": "EUR", "reason": "spend_cap"})
    _emit(app, "invoice.issued", user_id=owner, data={"invoice": {
        "id": "inv_1", "number": "2025-000001", "total": 1234, "currency": "EUR"}})
    _emit(app, "webhook.disabled", user_id=owner, data={
        "webhook_id": "whk_1", "url": "https://example.com/h", "reason": "410 Gone"})
    found = _listed(client, team["owner"])
    assert [(n["type"], n["title"]) for n in found] == [
        ("webhook.disabled", "A webhook was disabled"),
        ("invoice.issued", "Invoice 2025-000001 issued"),
        ("billing.suspended", "Your account is suspended"),
        ("billing.grace_started", "You are out of credit"),
    ]
    assert found[1]["body"] == "Total 12.34 EUR." and found[1]["link"] == "/billing/invoices/inv_1"
    assert "spend cap" in found[2]["body"]
    assert "2025-02-03 12:00 UTC" in found[3]["body"]
    for who in ("member", "viewer", "outsider"):
        assert _listed(client, team[who]) == []


def test_a_low_balance_alert_emits_an_event_and_a_notification(make_app, client):
    app = make_app(BILLING_LOW_BALANCE_THRESHOLDS="500")
    client = app.test_client()
    user = make_user(app, "ada@example.test")
    headers = bearer(login(client, "ada@example.test"))
    _grant_then_spend(app, user.id)
    found = _listed(client, headers)
    assert [n["type"] for n in found] == ["billing.low_balance"]
    assert found[0]["body"].startswith("Your balance is 3.00 EUR, below your alert at 5.00 EUR")
    with app.app_context():
        event = Event.get(Event.type == "billing.low_balance")
        assert outbox.data_of(event) == {"balance": 300, "threshold": 500, "currency": "EUR"}
        assert Notification.get(Notification.event == event.id).email_status == "pending"


def test_the_important_ones_are_mailed_through_smtp_once(make_app, smtp_servers):
    inbox, port = smtp_servers.start()
    app = make_app(BILLING_LOW_BALANCE_THRESHOLDS="500", BASE_URL="https://panel.example",
                   **smtp_settings(port))
    client = app.test_client()
    user = make_user(app, "ada@example.test", display_name="Ada")
    _grant_then_spend(app, user.id)
    _emit(app, "invoice.issued", user_id=user.id, data={"invoice": {
        "id": "inv_9", "number": "2025-000009", "total": 500, "currency": "EUR"}})
    _emit(app, "webhook.disabled", user_id=user.id, data={
        "webhook_id": "whk_1", "url": "https://example.com/h", "reason": "410"})
    assert inbox.messages() == []  # nothing is mailed inside the event's transaction
    with app.app_context(), database.connection_context():
        assert notifications.send_pending_mail() == 2
        assert notifications.send_pending_mail() == 0
    messages = sorted(inbox.messages(), key=lambda m: m["Subject"])
    assert [m["Subject"] for m in messages] == ["Invoice 2025-000009 issued",
                                                "Your balance is low"]
    assert all(m["To"] == "ada@example.test" for m in messages)
    text = messages[0].get_content()
    assert text.startswith("Hello Ada,") and "https://panel.example/billing/invoices/inv_9" in text
    headers = bearer(login(client, "ada@example.test"))
    assert _unread(client, headers) == 3  # the webhook one is in-app only


# An invoice's news stays true; a billing state's mail is skipped once the state is over.
INVOICE = {"invoice": {"id": "inv_1", "number": "2025-000001", "total": 100, "currency": "EUR"}}


def test_without_smtp_the_mail_waits_in_the_outbox(app, client, team):
    _emit(app, "invoice.issued", user_id=team["owner_id"], data=INVOICE)
    with app.app_context(), database.connection_context():
        assert notifications.send_pending_mail() == 1
        held = MailOutbox.get(MailOutbox.to_addr == "owner@example.test",
                              MailOutbox.subject == "Invoice 2025-000001 issued")
        assert held.status == "held"


def test_a_crashed_mail_claim_is_taken_again_after_ten_minutes(app, client, team):
    event = _emit(app, "invoice.issued", user_id=team["owner_id"], data=INVOICE)
    with app.app_context(), database.connection_context():
        Notification.update(email_status="sending", email_claimed_at=clock.now()).where(
            Notification.event == event.id).execute()
        assert notifications.send_pending_mail() == 0
        clock.advance(dt.timedelta(minutes=11))
        assert notifications.send_pending_mail() == 1
        assert MailOutbox.select().where(
            MailOutbox.subject == "Invoice 2025-000001 issued").count() == 1


def test_mark_read_read_all_counts_and_the_unread_filter(app, client, team):
    for number in range(3):
        _emit(app, "invoice.issued", user_id=team["owner_id"], data={"invoice": {
            "id": f"inv_{number}", "number": f"2025-00000{number}", "total": 100,
            "currency": "EUR"}})
    found = _listed(client, team["owner"])
    assert _unread(client, team["owner"]) == 3
    marked = api(client, "POST", f"/notifications/{found[0]['id']}/read", team["owner"])
    assert marked.status_code == 200 and marked.get_json()["read"] is True
    assert marked.get_json()["read_at"]
    again = api(client, "POST", f"/notifications/{found[0]['id']}/read", team["owner"])
    assert again.get_json()["read_at"] == marked.get_json()["read_at"]
    assert _unread(client, team["owner"]) == 2
    assert [n["id"] for n in _listed(client, team["owner"], unread="true")] == [
        found[1]["id"], found[2]["id"]]
    page = api(client, "GET", "/notifications", team["owner"],
               query_string={"limit": 2}).get_json()
    assert len(page["data"]) == 2 and page["page"]["has_more"] is True
    rest = _listed(client, team["owner"], limit=2, cursor=page["page"]["next_cursor"])
    assert [n["id"] for n in rest] == [found[2]["id"]]
    everything = api(client, "POST", "/notifications/read-all", team["owner"])
    assert everything.get_json() == {"marked": 2}
    assert _unread(client, team["owner"]) == 0
    assert _listed(client, team["owner"], unread="true") == []


def test_other_peoples_notifications_are_404_and_keys_cannot_read_them(app, client, team):
    _emit(app, "invoice.issued", user_id=team["owner_id"], data={"invoice": {
        "id": "inv_1", "number": "2025-000001", "total": 100, "currency": "EUR"}})
    mine = _listed(client, team["owner"])[0]
    stolen = api(client, "POST", f"/notifications/{mine['id']}/read", team["outsider"])
    assert stolen.status_code == 404
    assert stolen.get_json()["error"]["code"] == "notification_not_found"
    assert api(client, "POST", "/notifications/read-all", team["outsider"]).get_json() == {
        "marked": 0}
    assert _unread(client, team["owner"]) == 1
    secret, _ = create_key(client, team["owner"], ["webhooks:read"])
    refused = api(client, "GET", "/notifications", key_auth(secret))
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "api_key_not_allowed"
    bad = api(client, "GET", "/notifications", team["owner"], query_string={"unread": "maybe"})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["fields"][0][
        "field"] == "unread"


def test_expiring_keys_are_told_once_per_key(app, client, team):
    soon = (clock.now() + dt.timedelta(days=3)).isoformat()
    later = (clock.now() + dt.timedelta(days=30)).isoformat()
    _, expiring = create_key(client, team["owner"], name="ci", expires_at=soon)
    create_key(client, team["owner"], name="later", expires_at=later)
    _, revoked = create_key(client, team["owner"], name="gone", expires_at=soon)
    api(client, "DELETE", f"/api-keys/{revoked['id']}", team["owner"])
    with app.app_context(), database.connection_context():
        assert notifications.notify_expiring_keys() == 1
        assert notifications.notify_expiring_keys() == 0
    found = _listed(client, team["owner"])
    assert [(n["type"], n["title"]) for n in found] == [
        ("api_key.expiring", "API key 'ci' expires soon")]
    assert found[0]["link"] == "/keys"
    types = [e["type"] for e in api(client, "GET", "/events", team["owner"]).get_json()["data"]]
    assert types.count("api_key.expiring") == 1
    assert expiring["id"]


def test_a_failing_listener_rolls_back_alone(app, client, team, monkeypatch):
    def broken(event):
        Notification.create(id="ntf_broken", user=team["owner_id"], type=event.type,
                            title="half", created_at=clock.now())
        raise RuntimeError("a bug in a listener")

    monkeypatch.setattr(outbox, "_listeners", [broken, *outbox._listeners])
    event = _emit(app, "invoice.issued", user_id=team["owner_id"], data={"invoice": {
        "id": "inv_1", "number": "2025-000001", "total": 100, "currency": "EUR"}})
    with app.app_context():
        assert Event.get_or_none(Event.id == event.id) is not None
        assert Notification.get_or_none(Notification.id == "ntf_broken") is None
    assert [n["type"] for n in _listed(client, team["owner"])] == ["invoice.issued"]


def test_a_notification_rolls_back_with_its_event(app, client, team):
    with app.app_context(), database.connection_context():
        with pytest.raises(RuntimeError), database.atomic():
            outbox.emit("invoice.issued", user_id=team["owner_id"], data={"invoice": {
                "id": "inv_1", "number": "2025-000001", "total": 100, "currency": "EUR"}})
            raise RuntimeError("the change failed")
        assert Notification.select().count() == 0


def test_the_dashboard_shows_the_bell_lists_and_marks_read(app, client, team):
    _emit(app, "invoice.issued", user_id=team["owner_id"], data={"invoice": {
        "id": "inv_1", "number": "2025-000001", "total": 100, "currency": "EUR"}})
    sign_in(client, "owner@example.test")
    page = client.get("/keys").get_data(as_text=True)
    csrf = csrf_from(page)
    assert 'id="notification-bell"' in page and 'class="bell-count">1<' in page
    assert "js/live.js" in page and "instance.ready" in page  # the stream's event types
    listed = client.get("/notifications").get_data(as_text=True)
    assert "Invoice 2025-000001 issued" in listed and "Mark read" in listed
    notification = _listed(client, team["owner"])[0]
    marked = client.post(f"/notifications/{notification['id']}/read",
                         data={"csrf_token": csrf})
    assert marked.status_code == 302
    assert "bell-count" not in client.get("/notifications/bell").get_data(as_text=True)
    assert _unread(client, team["owner"]) == 0
