"""Optional Stripe top-ups: a Checkout Session to buy credit, and Stripe's webhook.

With `STRIPE_SECRET_KEY` set, `create_checkout(principal, amount)` POSTs a Checkout
Session (mode `payment`, one line of `amount` minor units in the operator's currency,
`client_reference_id` and `metadata` naming the account and the amount) to Stripe's
API and returns its URL; without it, 503 `provider_not_configured`.

Stripe then calls `/api/v1/billing/stripe/webhook`. `handle_webhook` checks the
`Stripe-Signature` header against `STRIPE_WEBHOOK_SECRET` (400 `invalid_signature`
otherwise) and, for `checkout.session.completed` with `payment_status` `paid` (or
`checkout.session.async_payment_succeeded`), credits the account in one durable
transaction:

- the session's `stripe_topup` row is marked credited with a conditional UPDATE (made
  first when the session is unknown here), so a session is credited once whatever
  events name it;
- the ledger entry's reference is `stripe:<event id>`, so a redelivered event is
  credited once too.

Other event types, and sessions that are unpaid, in another currency or for an unknown
account, are acknowledged (200) and credit nothing, so Stripe stops retrying them.
The one outbound call is `_post_form` (plain `requests`), which tests replace by
pointing `STRIPE_API_BASE` at a local stand-in.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from appliance import config
from appliance.errors import ApplianceError, InvalidRequest, ServiceUnavailable
from appliance.models import StripeTopup, User
from appliance.services import clock
from appliance.services.accounts.mail import link
from appliance.services.billing import billing_state, ledger
from appliance.services.principal import Principal
from appliance.services.webhooks import signing

log = logging.getLogger("appliance.stripe")

MIN_AMOUNT = 100  # Stripe refuses charges under about half a euro or dollar
MAX_AMOUNT = 1_000_000
TIMEOUT_SECONDS = 15
PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


class ProviderError(ApplianceError):
    status = 502
    code = "provider_error"
    message = "The payment provider could not be reached; try again."


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str


def _setting(name: str) -> str:
    return config.active()[name]


def configured() -> bool:
    return bool(_setting("STRIPE_SECRET_KEY"))


def _require_configured() -> None:
    if not configured():
        raise ServiceUnavailable("Top-ups by card are not set up on this appliance.",
                                 code="provider_not_configured")


def check_amount(amount: Any) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) \
            or not MIN_AMOUNT <= amount <= MAX_AMOUNT:
        raise InvalidRequest(f"The amount is a whole number of minor units from {MIN_AMOUNT} "
                             f"to {MAX_AMOUNT}.", field="amount")
    return amount


def create_checkout(principal: Principal, amount: int) -> Checkout:
    """A Stripe Checkout Session buying `amount` of credit for the caller's account.

    400 for an amount out of bounds, 503 `provider_not_configured` without Stripe, 502
    `provider_error` when Stripe fails or cannot be reached. API keys need billing:write.
    """
    principal.require_scope("billing:write")
    check_amount(amount)
    _require_configured()
    currency = billing_state.currency()
    user = principal.user
    form = {
        "mode": "payment",
        "success_url": link("/billing/invoices?topup=success"),
        "cancel_url": link("/billing/invoices?topup=cancelled"),
        "client_reference_id": user.id,
        "customer_email": user.email,
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": currency.lower(),
        "line_items[0][price_data][unit_amount]": str(amount),
        "line_items[0][price_data][product_data][name]": "Prepaid credit",
        "metadata[user_id]": user.id,
        "metadata[amount]": str(amount),
        "payment_intent_data[metadata][user_id]": user.id,
    }
    session = _post_form("/v1/checkout/sessions", form)
    session_id, url = session.get("id"), session.get("url")
    if not isinstance(session_id, str) or not isinstance(url, str):
        raise ProviderError("The payment provider answered without a checkout URL.")
    with ledger.durable():
        StripeTopup.insert(session_id=session_id, user=user.id, amount=amount,
                           currency=currency, created_at=clock.now()).on_conflict_ignore(
        ).execute()
    return Checkout(session_id, url)


def _post_form(path: str, form: dict[str, str]) -> dict[str, Any]:
    """POST a form to Stripe's API and return the JSON answer (502 on any failure)."""
    import requests  # only where Stripe is configured: not on every start-up

    try:
        response = requests.post(
            _setting("STRIPE_API_BASE") + path, data=form, timeout=TIMEOUT_SECONDS,
            headers={"Authorization": f"Bearer {_setting('STRIPE_SECRET_KEY')}"},
            allow_redirects=False)
    except requests.RequestException as exc:
        log.warning("stripe: %s failed: %s", path, exc)
        raise ProviderError() from None
    if response.status_code != 200:
        log.warning("stripe: %s answered %s: %s", path, response.status_code,
                    response.text[:500])
        raise ProviderError()
    try:
        return response.json()
    except ValueError:
        raise ProviderError("The payment provider's answer was not JSON.") from None


def handle_webhook(signature_header: str, body: bytes) -> bool:
    """Verify and apply one Stripe event; True when it credited an account.

    400 `invalid_signature` for a bad, stale or missing signature, 400 `invalid_request`
    for a body that is not an event, 503 `provider_not_configured` without a webhook
    secret.
    """
    secret = _setting("STRIPE_WEBHOOK_SECRET")
    if not secret:
        raise ServiceUnavailable("Stripe webhooks are not set up on this appliance.",
                                 code="provider_not_configured")
    try:
        signing.verify_stripe(secret, signature_header, body)
    except signing.SignatureError as exc:
        raise InvalidRequest(f"The Stripe signature does not hold: {exc}.",
                             code="invalid_signature", field="Stripe-Signature") from None
    try:
        event = json.loads(body)
        event_id, kind = event["id"], event["type"]
        session = event["data"]["object"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("The body is not a Stripe event.", field="body") from None
    if kind not in PAID_EVENTS:
        return False
    if not isinstance(session, dict) or session.get("payment_status") != "paid":
        return False
    return _credit(str(event_id), session)


def _credit(event_id: str, session: dict[str, Any]) -> bool:
    session_id = session.get("id")
    user_id = session.get("client_reference_id") or (session.get("metadata") or {}).get(
        "user_id")
    amount = session.get("amount_total")
    currency = str(session.get("currency") or "").upper()
    if not isinstance(session_id, str) or not isinstance(amount, int) or amount <= 0:
        log.warning("stripe: event %s has no usable session id or amount", event_id)
        return False
    if currency != billing_state.currency():
        log.warning("stripe: event %s paid in %s, not %s; not credited", event_id, currency,
                    billing_state.currency())
        return False
    if not isinstance(user_id, str) or User.get_or_none(User.id == user_id) is None:
        log.warning("stripe: event %s names no account of this appliance", event_id)
        return False
    reference = f"stripe:{event_id}"
    with ledger.durable():
        StripeTopup.insert(session_id=session_id, user=user_id, amount=amount,
                           currency=currency, created_at=clock.now()).on_conflict_ignore(
        ).execute()
        claimed = (StripeTopup.update(credited_at=clock.now(), event_id=event_id,
                                      ledger_reference=reference)
                   .where(StripeTopup.session_id == session_id,
                          StripeTopup.user == user_id,
                          StripeTopup.credited_at.is_null()).execute())
        if not claimed:
            return False
        entry = ledger.post(user_id, "topup", amount, reference,
                            note=f"Stripe Checkout {session_id}")
    log.info("stripe: %s credited %s to %s", session_id, amount, user_id)
    return entry.is_new
