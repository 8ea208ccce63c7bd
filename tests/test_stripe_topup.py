"""Stripe top-ups against a local stand-in for Stripe's API, with webhooks signed as Stripe
signs them."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from appliance.db import database
from appliance.models import LedgerEntry, StripeTopup
from appliance.services import clock
from appliance.services.billing import ledger
from appliance.services.webhooks import signing
from tests.factories import Browser, api, bearer, create_key, key_auth, login, make_user

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
SECRET_KEY = "sk_test_appliance"


class StripeStandIn:
    """Answers POST /v1/checkout/sessions like Stripe and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status = 200
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # the name http.server calls
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                stand_in.requests.append({"path": self.path, "form": form,
                                          "headers": dict(self.headers)})
                number = len(stand_in.requests)
                body = ({"id": f"cs_test_{number}", "object": "checkout.session",
                         "url": f"https://checkout.stripe.test/c/pay/cs_test_{number}"}
                        if stand_in.status == 200 else
                        {"error": {"type": "api_error", "message": "boom"}})
                encoded = json.dumps(body).encode()
                self.send_response(stand_in.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stripe():
    stand_in = StripeStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def app(make_app, stripe):
    return make_app(STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                    STRIPE_API_BASE=stripe.url, BASE_URL="https://panel.example.test")


@pytest.fixture
def user(app):
    return make_user(app)


@pytest.fixture
def auth(client, user):
    return bearer(login(client, user.email))


def _balance(app, user) -> int:
    with app.app_context(), database.connection_context():
        return ledger.balance(user.id)


def _event(user_id: str, *, event_id: str = "evt_1", session_id: str = "cs_test_1",
           kind: str = "checkout.session.completed", paid: str = "paid", amount: int = 2500,
           currency: str = "eur") -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": kind, "api_version": "2024-06-20",
        "created": int(clock.now().timestamp()), "livemode": False,
        "data": {"object": {
            "id": session_id, "object": "checkout.session", "mode": "payment",
            "amount_total": amount, "currency": currency, "payment_status": paid,
            "status": "complete", "client_reference_id": user_id,
            "metadata": {"user_id": user_id, "amount": str(amount)}}},
    }).encode()


def _deliver(client, body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    stamp = int(clock.now().timestamp()) if timestamp is None else timestamp
    return client.post("/api/v1/billing/stripe/webhook", data=body,
                       headers={"Stripe-Signature": signing.stripe_signature_header(
                           secret, stamp, body), "Content-Type": "application/json"})


def test_a_top_up_creates_a_checkout_session(client, user, auth, stripe):
    response = api(client, "POST", "/billing/top-up", auth, json={"amount": 2500})
    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {
        "checkout_url": "https://checkout.stripe.test/c/pay/cs_test_1",
        "session_id": "cs_test_1"}
    [sent] = stripe.requests
    assert sent["path"] == "/v1/checkout/sessions"
    assert sent["headers"]["Authorization"] == f"Bearer {SECRET_KEY}"
    form = sent["form"]
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][currency]"] == "eur"
    assert form["line_items[0][price_data][unit_amount]"] == "2500"
    assert form["line_items[0][quantity]"] == "1"
    assert form["client_reference_id"] == user.id
    assert (form["metadata[user_id]"], form["metadata[amount]"]) == (user.id, "2500")
    assert form["success_url"] == "https://panel.example.test/billing/invoices?topup=success"
    assert form["cancel_url"] == "https://panel.example.test/billing/invoices?topup=cancelled"


def test_a_repeated_idempotency_key_makes_one_session(client, auth, stripe):
    headers = {**auth, "Idempotency-Key": "topup-1"}
    first = api(client, "POST", "/billing/top-up", headers, json={"amount": 1000})
    again = api(client, "POST", "/billing/top-up", headers, json={"amount": 1000})
    assert first.get_json() == again.get_json()
    assert len(stripe.requests) == 1


@pytest.mark.parametrize("body", [{"amount": 0}, {"amount": 99}, {"amount": -500},
                                  {"amount": 1_000_001}, {"amount": 10**20}, {"amount": "2500"},
                                  {"amount": 25.5}, {"amount": True}, {}])
def test_bad_amounts_are_refused_naming_the_field(client, auth, stripe, body):
    response = api(client, "POST", "/billing/top-up", auth, json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "amount"
    assert stripe.requests == []


def test_keys_need_billing_write(client, auth):
    secret, _ = create_key(client, auth, ["billing:read"])
    response = api(client, "POST", "/billing/top-up", key_auth(secret), json={"amount": 1000})
    assert response.status_code == 403
    assert response.get_json()["error"]["details"]["scope"] == "billing:write"


def test_stripe_failing_is_a_502(client, auth, stripe):
    stripe.status = 500
    response = api(client, "POST", "/billing/top-up", auth, json={"amount": 1000})
    assert (response.status_code, response.get_json()["error"]["code"]) == (502, "provider_error")


def test_without_stripe_top_ups_and_the_webhook_are_503(make_app):
    app = make_app()
    client = app.test_client()
    user = make_user(app)
    response = api(client, "POST", "/billing/top-up", bearer(login(client, user.email)),
                   json={"amount": 1000})
    assert (response.status_code, response.get_json()["error"]["code"]) == (
        503, "provider_not_configured")
    hook = _deliver(client, _event(user.id))
    assert (hook.status_code, hook.get_json()["error"]["code"]) == (
        503, "provider_not_configured")


def test_a_paid_session_is_credited_once_however_often_stripe_says_so(app, client, user, auth):
    api(client, "POST", "/billing/top-up", auth, json={"amount": 2500})
    response = _deliver(client, _event(user.id))
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "credited": True}
    assert _balance(app, user) == 2500
    # Stripe redelivers the event, and then names the same session in another event.
    assert _deliver(client, _event(user.id)).get_json()["credited"] is False
    other = _event(user.id, event_id="evt_2", kind="checkout.session.async_payment_succeeded")
    assert _deliver(client, other).get_json()["credited"] is False
    assert _balance(app, user) == 2500
    with app.app_context(), database.connection_context():
        [entry] = LedgerEntry.select()
        assert (entry.type, entry.amount, entry.reference) == ("topup", 2500, "stripe:evt_1")
        assert StripeTopup.get_by_id("cs_test_1").event_id == "evt_1"


def test_a_session_unknown_here_is_credited_too(app, client, user):
    assert _deliver(client, _event(user.id, session_id="cs_elsewhere")).get_json()[
        "credited"] is True
    assert _balance(app, user) == 2500


@pytest.mark.parametrize("change", [
    {"kind": "payment_intent.succeeded"}, {"kind": "checkout.session.expired"},
    {"paid": "unpaid"}, {"currency": "usd"}, {"amount": 0}])
def test_other_events_are_acknowledged_and_credit_nothing(app, client, user, change):
    response = _deliver(client, _event(user.id, **change))
    assert response.status_code == 200
    assert response.get_json() == {"received": True, "credited": False}
    assert _balance(app, user) == 0


def test_an_unknown_account_is_acknowledged_and_credits_nothing(app, client, user):
    response = _deliver(client, _event("usr_nobody"))
    assert response.get_json() == {"received": True, "credited": False}


@pytest.mark.parametrize("how", ["wrong secret", "stale", "no header", "tampered"])
def test_a_bad_signature_is_a_400(app, client, user, how):
    body = _event(user.id)
    if how == "wrong secret":
        response = _deliver(client, body, secret="whsec_other")
    elif how == "stale":
        response = _deliver(client, body, timestamp=int(clock.now().timestamp()) - 600)
    elif how == "no header":
        response = client.post("/api/v1/billing/stripe/webhook", data=body,
                               headers={"Content-Type": "application/json"})
    else:
        header = signing.stripe_signature_header(WEBHOOK_SECRET, int(clock.now().timestamp()),
                                                 body)
        response = client.post("/api/v1/billing/stripe/webhook",
                               data=body.replace(b"2500", b"9999"),
                               headers={"Stripe-Signature": header})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_signature"
    assert _balance(app, user) == 0


def test_a_signed_body_that_is_no_event_is_a_400(client):
    response = _deliver(client, b'{"hello": "world"}')
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "body"


def test_the_dashboard_form_sends_the_buyer_to_checkout(app, user, stripe):
    browser = Browser(app, user.email)
    page = browser.page("/billing/invoices")
    assert "Buy credit" in page
    response = browser.post("/billing/top-up", {"amount": "25.50"})
    assert response.status_code == 303
    assert response.headers["Location"] == "https://checkout.stripe.test/c/pay/cs_test_1"
    assert stripe.requests[0]["form"]["line_items[0][price_data][unit_amount]"] == "2550"
    refused = browser.post("/billing/top-up", {"amount": "0.005"})
    assert refused.status_code == 400
    assert 'aria-invalid="true"' in refused.get_data(as_text=True)
    assert len(stripe.requests) == 1
    back = browser.page("/billing/invoices?topup=success")
    assert "as soon as Stripe confirms" in back
