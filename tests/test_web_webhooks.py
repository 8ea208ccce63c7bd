"""Dashboard pages for webhooks and events (test client, real receiver on 127.0.0.1)."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook as StandardWebhook

from appliance.models import Webhook
from appliance.services.events import outbox
from appliance.services.principal import Principal
from appliance.services.webhooks import batches, deliveries
from tests.factories import EVIL, EVIL_ESCAPED, Browser, make_user
from tests.receivers import Answer, Receiver, allow_loopback


@pytest.fixture(autouse=True)
def loopback(monkeypatch):
    allow_loopback(monkeypatch)


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def users(app):
    """This module's people, without display names (`ada` signs in as the first)."""
    return {name: make_user(app, f"{name}@example.test") for name in ("ada", "eve")}


def _create(ada, url, **fields):
    response = ada.post("/webhooks", {"url": url, "all_types": "1", **fields}, follow=True)
    assert [r.status_code for r in response.history] == [302]  # post/redirect/get
    assert response.status_code == 200, response.get_data(as_text=True)[:3000]
    return response


def _only_webhook(app) -> Webhook:
    with app.app_context():
        return Webhook.select().get()


def test_the_secret_is_shown_once_and_verifies_a_delivery(app, ada, users, receiver):
    page = ada.page("/webhooks")
    assert "New webhook" in page and "instance.ready" in page and "Every event" in page
    response = _create(ada, receiver.url, description=EVIL)
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    secret = re.search(r'value="(whsec_[^"]+)"', html).group(1)
    assert EVIL_ESCAPED in html and EVIL not in html
    assert secret not in ada.page("/webhooks")
    webhook = _only_webhook(app)
    with app.app_context():
        outbox.emit("billing.credited", user_id=users["ada"].id, data={"amount": 5})
        batches.deliver_due()
    request = receiver.received[0]
    assert StandardWebhook(secret).verify(request.body, request.headers)["type"] == (
        "billing.credited")
    detail = ada.page(f"/webhooks/{webhook.id}")
    assert "billing.credited" in detail and "badge-ok" in detail and "succeeded" in detail


def test_bad_input_shows_the_message_next_to_the_field(ada):
    response = ada.post("/webhooks", {"url": "http://169.254.169.254/", "all_types": "1"})
    assert response.status_code == 400
    html = response.get_data(as_text=True)
    assert "cannot receive webhooks" in html and 'aria-invalid="true"' in html
    response = ada.post("/webhooks", {"url": "http://127.0.0.1:9/"})  # no type chosen
    assert response.status_code == 400
    assert "Choose at least one event type" in response.get_data(as_text=True)


def test_test_pause_resume_rotate_redeliver_and_delete(app, ada, users, receiver):
    _create(ada, receiver.url, event_types="billing.credited")
    webhook = _only_webhook(app)
    one = f"/webhooks/{webhook.id}"
    tested = ada.post(one + "/test", follow=True)
    assert tested.status_code == 200 and "Test delivered: HTTP 200" in tested.get_data(
        as_text=True)
    receiver.answer(Answer(500))
    failed = ada.post(one + "/test", follow=True).get_data(as_text=True)
    assert "Test failed: HTTP 500" in failed and "badge-danger" in failed
    assert ada.post(one + "/pause").status_code == 302
    assert "paused" in ada.page(one)
    assert ada.post(one + "/resume").status_code == 302
    rotated = ada.post(one + "/rotate", {"grace_seconds": "3600"}, follow=True)
    assert rotated.headers["Cache-Control"] == "no-store"
    assert "whsec_" in rotated.get_data(as_text=True)
    with app.app_context():
        rows, _ = deliveries.list_deliveries(Principal(users["ada"], None, "session"),
                                             webhook.id)
    assert len(rows) == 2  # the two tests
    again = ada.post(f"{one}/deliveries/{rows[0].id}/redeliver")
    assert again.status_code == 302
    page = ada.page(one)
    assert "redelivery" in page and "Redeliver" in page
    assert ada.post(one + "/delete").status_code == 302
    assert ada.get(one).status_code == 404


def test_the_events_page_lists_and_filters(app, ada, users):
    with app.app_context():
        outbox.emit("billing.credited", user_id=users["ada"].id, data={"message": EVIL})
        outbox.emit("member.added", user_id=users["eve"].id, data={"message": "not yours"})
    page = ada.page("/events")
    assert "billing.credited" in page and "not yours" not in page
    assert EVIL not in page and "&lt;script&gt;" in page
    assert "<code>billing.credited</code>" in page
    assert "<code>billing.credited</code>" not in ada.page("/events?type=member.added")
    assert ada.get("/events?type=nope").status_code == 400


def test_someone_elses_webhook_page_is_404(app, ada, users, receiver):
    _create(ada, receiver.url)
    webhook = _only_webhook(app)
    eve = Browser(app, "eve@example.test")
    assert eve.get(f"/webhooks/{webhook.id}").status_code == 404
    assert eve.post(f"/webhooks/{webhook.id}/delete").status_code == 404
    assert receiver.url not in eve.page("/webhooks")


def test_the_nav_links_to_webhooks_and_events(ada):
    page = ada.page("/webhooks")
    assert 'href="/webhooks" aria-current="page"' in page and 'href="/events"' in page
