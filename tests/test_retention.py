"""Retention: events, finished deliveries and read notifications go after
EVENT_RETENTION_DAYS; what is pending or unread stays. The clock is moved, never slept on."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance import scheduler
from appliance.db import database
from appliance.models import Event, Notification, Webhook, WebhookAttempt, WebhookDelivery
from appliance.services import clock
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.ops import retention
from tests.factories import make_user

T0 = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def user(app):
    clock.freeze(T0)
    return make_user(app)


@pytest.fixture
def ctx(app, user):
    with app.app_context(), database.connection_context():
        yield app


def a_webhook(user_id: str) -> Webhook:
    return Webhook.create(id=new_id("whk"), user=user_id, url="https://hooks.example.com/",
                          secret_sealed="sealed", created_at=clock.now(),
                          updated_at=clock.now())


def an_event(user_id: str) -> Event:
    return outbox.emit("billing.credited", user_id=user_id, data={"amount": 1})


def delivery_of(event: Event) -> WebhookDelivery:
    return WebhookDelivery.get(WebhookDelivery.event == event.id)


def finish(delivery: WebhookDelivery, at: dt.datetime) -> None:
    WebhookAttempt.create(delivery=delivery, number=1, started_at=at, status_code=200)
    WebhookDelivery.update(status="succeeded", attempts=1, finished_at=at).where(
        WebhookDelivery.id == delivery.id).execute()


def a_notification(user_id: str, *, read: bool, email_status: str | None = None,
                   event: Event | None = None) -> Notification:
    return Notification.create(id=new_id("ntf"), user=user_id, event=event,
                               type="instance.ready", title="web-1 is running",
                               read_at=clock.now() if read else None,
                               email_status=email_status, created_at=clock.now())


def ids(model) -> set:
    return {row.id for row in model.select()}


def test_old_finished_history_goes_and_pending_or_unread_stays(ctx, user):
    a_webhook(user.id)
    delivered, waiting, redelivered = an_event(user.id), an_event(user.id), an_event(user.id)
    finish(delivery_of(delivered), clock.now())
    finish(delivery_of(redelivered), clock.now())
    read = a_notification(user.id, read=True, event=delivered)
    unread = a_notification(user.id, read=False, event=delivered)
    mail_waiting = a_notification(user.id, read=True, email_status="pending")

    clock.advance(89 * DAY)
    recent = an_event(user.id)
    # A manual redelivery of an old event, finished lately: its log keeps the event.
    again = WebhookDelivery.create(id=new_id("dlv"), webhook=delivery_of(redelivered).webhook,
                                   event=redelivered, msg_id=redelivered.id,
                                   trigger="redelivery", created_at=clock.now())
    finish(again, clock.now())
    assert retention.purge_old() == {
        "notifications": 0, "webhook_attempts": 0, "webhook_deliveries": 0, "events": 0}

    clock.advance(2 * DAY)  # 91 days after the first rows
    assert retention.purge_old() == {
        "notifications": 1, "webhook_attempts": 2, "webhook_deliveries": 2, "events": 1}
    assert ids(Event) == {waiting.id, redelivered.id, recent.id}
    assert delivery_of(waiting).status == "pending"
    assert ids(WebhookDelivery) == {delivery_of(waiting).id, delivery_of(recent).id, again.id}
    assert [a.delivery_id for a in WebhookAttempt.select()] == [again.id]
    assert ids(Notification) == {unread.id, mail_waiting.id}
    assert read.id not in ids(Notification)
    assert Notification.get_by_id(unread.id).event_id is None  # its text stays, unlinked
    # Run again (late, twice): nothing more goes.
    assert sum(retention.purge_old().values()) == 0


def test_the_purge_is_a_daily_task(app, user):
    task = scheduler.tasks()["purge_old_events"]
    assert task.seconds == 86400
    with app.app_context(), database.connection_context():
        an_event(user.id)
    clock.advance(91 * DAY)
    assert scheduler.run_task(app, "purge_old_events")["events"] == 1


def test_the_period_is_the_setting(make_app, data_dir):
    clock.freeze(T0)
    app = make_app(EVENT_RETENTION_DAYS=7)
    user = make_user(app)
    with app.app_context(), database.connection_context():
        kept_for_now = an_event(user.id)
        clock.advance(6 * DAY)
        assert retention.purge_old()["events"] == 0
        clock.advance(2 * DAY)
        assert retention.purge_old()["events"] == 1
        assert not Event.select().where(Event.id == kept_for_now.id).exists()


def test_a_big_purge_runs_in_batches_each_its_own_transaction(ctx, user, monkeypatch):
    monkeypatch.setattr(retention, "PAUSE_SECONDS", 0)
    for _ in range(5):
        an_event(user.id)
        a_notification(user.id, read=True)
    clock.advance(100 * DAY)
    commits = []

    class CountingTransactions:
        def atomic(self):
            commits.append(1)
            return database.atomic()

    monkeypatch.setattr(retention, "database", CountingTransactions())
    assert retention.purge_old(batch=2) == {
        "notifications": 5, "webhook_attempts": 0, "webhook_deliveries": 0, "events": 5}
    # 5 rows in batches of 2: three transactions each for notifications and events, none
    # for deliveries (none found).
    assert len(commits) == 3 + 3
    assert Event.select().count() == Notification.select().count() == 0
