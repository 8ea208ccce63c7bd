"""Webhook deliveries: sending one, the retry schedule, the log, redelivery and tests.

A delivery is a row (queued by services/webhooks.fan_out in the event's transaction). It
is claimed with a conditional UPDATE that sets a lease and counts the attempt, the
attempt is logged *before* the request goes out (so the log never shows fewer requests
than a receiver saw, even after `kill -9`), and the outcome is written afterwards:

- a 2xx within 15 s: succeeded;
- 410 Gone: failed, and the webhook is disabled at once;
- anything else (3xx - redirects are never followed -, 4xx, 5xx, a timeout, a refused
  connection, an address the SSRF guard refuses): tried again after 5 s, 5 min, 30 min,
  2 h, 5 h, 10 h and 10 h (each +-10 %), then failed. A 429 or 503 with Retry-After
  (seconds or an HTTP date) waits that long instead, up to 10 hours.

A webhook whose deliveries have failed for five days without a success in between is
disabled, and a `webhook.disabled` event tells its owner. The body is
`{"type", "timestamp", "data"}` signed per Standard Webhooks (services/webhooks/signing.py);
`webhook-id` is the event's id on every attempt and on redeliveries.

The dispatcher sends in batches: services/webhooks/batches.py.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import random
from collections.abc import Collection
from dataclasses import dataclass

from peewee import Expression

from appliance import __version__, db
from appliance.db import database, db_time, raw_sql
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.models import Event, Webhook, WebhookAttempt, WebhookDelivery
from appliance.services import clock, pagination
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints, signing, ssrf

log = logging.getLogger("appliance.webhooks")

# Seconds to wait before attempt n+1 (the first goes at once): 8 attempts in about 28 h.
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.10
TIMEOUT = 15.0
LEASE = dt.timedelta(seconds=60)  # longer than TIMEOUT: a live attempt never loses it
DISABLE_AFTER = dt.timedelta(days=5)
MAX_RETRY_AFTER = dt.timedelta(hours=10)
EXCERPT_BYTES = 2048
STATUSES = ("pending", "succeeded", "failed")
USER_AGENT = f"appliance-webhooks/{__version__}"
INTERRUPTED = "The appliance stopped during this attempt; it is tried again."


@dataclass
class Answer:
    """What the endpoint said (or why it said nothing)."""

    status_code: int | None = None
    excerpt: str = ""
    error: str | None = None
    duration_ms: int = 0
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    delivery_id: str
    status: str  # the delivery's status afterwards: pending | succeeded | failed
    status_code: int | None
    error: str | None
    duration_ms: int


def payload(event: Event) -> bytes:
    """The body every attempt of `event` sends, byte for byte the same."""
    return payload_of(event.type, event.created_at, event.data)


def payload_of(event_type: str, created_at: dt.datetime, data: str | None) -> bytes:
    return json.dumps({"type": event_type, "timestamp": clock.isoformat(created_at),
                       "data": json.loads(data or "{}")}, separators=(",", ":")).encode()


def retry_delay(attempt: int, retry_after: dt.timedelta | None = None) -> dt.timedelta | None:
    """How long after failed attempt number `attempt` (1-based) the next one goes; None
    when the schedule is used up. Retry-After, when given, replaces the step."""
    if attempt >= len(SCHEDULE):
        return None
    if retry_after is not None:
        return min(max(retry_after, dt.timedelta(seconds=1)), MAX_RETRY_AFTER)
    step = SCHEDULE[attempt]
    return dt.timedelta(seconds=step * random.uniform(1 - JITTER, 1 + JITTER))  # noqa: S311


def parse_retry_after(value: str | None, now: dt.datetime) -> dt.timedelta | None:
    """Retry-After as seconds or an HTTP date (RFC 9110); None when absent or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return dt.timedelta(seconds=min(int(value), int(MAX_RETRY_AFTER.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(when - now, dt.timedelta(0))


# Claiming ----------------------------------------------------------------------------


def _due(now: dt.datetime) -> Expression:
    return ((WebhookDelivery.status == "pending") & (WebhookDelivery.next_attempt_at <= now)
            & (WebhookDelivery.lease_until.is_null() | (WebhookDelivery.lease_until < now)))


def next_due_at(exclude_webhooks: Collection[str] = ()) -> dt.datetime | None:
    """When the earliest pending delivery nobody holds to an active webhook (not one of
    `exclude_webhooks`) comes due."""
    query = (WebhookDelivery.select(WebhookDelivery.next_attempt_at).join(Webhook)
             .where(WebhookDelivery.status == "pending", Webhook.status == "active",
                    WebhookDelivery.next_attempt_at.is_null(False),
                    WebhookDelivery.lease_until.is_null()
                    | (WebhookDelivery.lease_until < clock.now())))
    if exclude_webhooks:
        query = query.where(WebhookDelivery.webhook.not_in(list(exclude_webhooks)))
    row = query.order_by(WebhookDelivery.next_attempt_at).first()
    return row.next_attempt_at if row is not None else None


def claim_many(delivery_ids: list[str], *, test: bool = False) -> list[str]:
    """Take due deliveries for one attempt each, in one transaction: lease, attempt
    count, and the attempt logged (unfinished) before any request goes out. Returns the
    ones taken; the others another worker has, or they are not due. Test deliveries have
    no due time: `test=True`."""
    now = clock.now()
    if test:
        due = (WebhookDelivery.status == "pending") & (
            WebhookDelivery.lease_until.is_null() | (WebhookDelivery.lease_until < now))
    else:
        due = _due(now)
    claimed = []
    with database.atomic():
        for delivery_id in delivery_ids:
            changed = (WebhookDelivery.update(lease_until=now + LEASE,
                                              attempts=WebhookDelivery.attempts + 1)
                       .where(WebhookDelivery.id == delivery_id, due).execute())
            if changed == 1:
                claimed.append(delivery_id)
        if claimed:
            WebhookAttempt.insert_many([
                {"delivery": row.id, "number": row.attempts, "started_at": now}
                for row in WebhookDelivery.select(WebhookDelivery.id, WebhookDelivery.attempts)
                .where(WebhookDelivery.id.in_(claimed))]).execute()
    return claimed


def claim(delivery_id: str, *, test: bool = False) -> bool:
    """`claim_many` of one delivery."""
    return bool(claim_many([delivery_id], test=test))


def recover_interrupted() -> int:
    """Start-up: deliveries a previous process had claimed are due again at once, and
    attempts it left unfinished are logged as interrupted. On SQLite one process
    delivers; on PostgreSQL another process may be delivering them, and their leases are
    left to run out (an attempt a dead process left stays without an answer)."""
    if not db.is_sqlite():
        return 0
    now = clock.now()
    with database.atomic():
        WebhookAttempt.update(error=INTERRUPTED).where(
            WebhookAttempt.status_code.is_null(), WebhookAttempt.error.is_null()).execute()
        return WebhookDelivery.update(lease_until=now - dt.timedelta(seconds=1)).where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.lease_until.is_null(False)).execute()


# Attempting --------------------------------------------------------------------------


# What an attempt reads (only these: building a query of every column costs more than
# running it).
_ATTEMPT_COLUMNS = (
    WebhookDelivery.id, WebhookDelivery.webhook, WebhookDelivery.event,
    WebhookDelivery.msg_id, WebhookDelivery.trigger, WebhookDelivery.attempts,
    Webhook.id, Webhook.user, Webhook.url, Webhook.secret_sealed,
    Webhook.previous_secret_sealed, Webhook.previous_valid_until, Webhook.failing_since,
    Event.id, Event.type, Event.data, Event.created_at,
)


def attempt(delivery_id: str) -> Outcome:
    """Send one claimed delivery and record the outcome (see the module docstring)."""
    delivery = (WebhookDelivery.select(*_ATTEMPT_COLUMNS)
                .join(Webhook).switch(WebhookDelivery).join(Event)
                .where(WebhookDelivery.id == delivery_id).get())
    webhook = delivery.webhook
    started = clock.now()
    answer = send_request(delivery.id, delivery.msg_id, webhook, payload(delivery.event),
                          started=started, secrets=endpoints.signing_secrets(webhook, started))
    with database.atomic():
        outcome, disable = write_outcome(delivery.id, delivery.trigger, delivery.attempts,
                                         webhook, started=started, answer=answer)
        if disable is not None:
            disable_webhook(webhook.id, disable)
    return outcome


def send_request(delivery_id: str, msg_id: str, webhook: Webhook, body: bytes, *,
                 started: dt.datetime, secrets: list[str]) -> Answer:
    """POST one signed attempt through the SSRF guard; what came back, never raising."""
    if not secrets:
        return Answer(error="The signing secret cannot be read (the appliance's SECRET_KEY "
                            "changed); rotate the webhook's secret.")
    sent = {**signing.headers(secrets, msg_id, int(started.timestamp()), body),
            "User-Agent": USER_AGENT}
    answer = Answer()
    try:
        response = ssrf.post(webhook.url, body, sent, timeout=TIMEOUT,
                             allow_private=endpoints.allow_private(cached=True),
                             max_excerpt=EXCERPT_BYTES)
        answer = Answer(response.status, response.body_excerpt[:EXCERPT_BYTES], None,
                        response.duration_ms, response.headers)
    except ssrf.UnsafeURL as exc:
        answer.error = f"Refused by the SSRF guard: {exc.message}"
    except ssrf.DeliveryError as exc:
        answer.error = str(exc)
    except Exception:  # a bug must not leave the delivery leased forever
        log.exception("webhook delivery %s crashed", delivery_id)
        answer.error = "An internal error stopped this attempt; the log has the details."
    if not answer.duration_ms:
        answer.duration_ms = round((clock.now() - started).total_seconds() * 1000)
    code = answer.status_code
    if code is not None and not 200 <= code < 300:
        answer.error = f"HTTP {code}" + (" (redirects are not followed)"
                                         if 300 <= code < 400 else "")
    return answer


def answered_ok(answer: Answer) -> bool:
    return answer.status_code is not None and 200 <= answer.status_code < 300


def write_outcome(delivery_id: str, trigger: str, number: int, webhook: Webhook, *,
                  started: dt.datetime, answer: Answer) -> tuple[Outcome, str | None]:
    """Inside a transaction: the attempt's log row, the delivery's new state and the
    webhook's health (`webhook.failing_since` is kept up to date in memory). Returns the
    outcome and why the webhook must now be disabled (the caller does it), if it must."""
    now = clock.now()
    status_code, error, headers = answer.status_code, answer.error, answer.headers or {}
    is_test = trigger == "test"
    ok = answered_ok(answer)
    status, next_at, disable = "pending", None, None
    if ok:
        status = "succeeded"
    elif status_code == 410 and not is_test:
        status, disable = "failed", "The endpoint answered 410 Gone."
    else:
        retry_after = None
        if status_code in (429, 503):
            retry_after = parse_retry_after(headers.get("retry-after"), now)
        delay = None if is_test else retry_delay(number, retry_after)
        if delay is None:
            status = "failed"
        else:
            next_at = now + delay
    # Raw SQL: on the delivery path peewee's query building cost more than SQLite.
    raw_sql(
        "UPDATE webhook_attempt SET started_at = ?, duration_ms = ?, status_code = ?, "
        "response_excerpt = ?, error = ? WHERE delivery_id = ? AND number = ?",
        (db_time(started), answer.duration_ms, status_code, answer.excerpt, error,
         delivery_id, number))
    raw_sql(
        "UPDATE webhook_delivery SET status = ?, lease_until = NULL, last_status_code = ?, "
        "last_error = ?, next_attempt_at = ?, finished_at = ? WHERE id = ?",
        (status, status_code, error, db_time(next_at) if status == "pending" else None,
         db_time(now) if status != "pending" else None, delivery_id))
    if not is_test:
        disable = _track_health(webhook, ok, now, disable)
    return Outcome(delivery_id, status, status_code, error, answer.duration_ms), disable


def _track_health(webhook: Webhook, ok: bool, now: dt.datetime,
                  disable: str | None) -> str | None:
    """A success ends a run of failures; five days of them (or a 410) disable: the reason
    is returned."""
    if ok:
        if webhook.failing_since is not None:
            Webhook.update(failing_since=None).where(Webhook.id == webhook.id).execute()
            webhook.failing_since = None
        return None
    since = webhook.failing_since
    if since is None:
        Webhook.update(failing_since=now).where(
            Webhook.id == webhook.id, Webhook.failing_since.is_null()).execute()
        webhook.failing_since = now
    elif disable is None and now - since >= DISABLE_AFTER:
        disable = "Every delivery failed for 5 days."
    return disable


def disable_webhook(webhook_id: str, reason: str) -> bool:
    """Disable a webhook (inside a transaction): its pending deliveries fail, and a
    `webhook.disabled` event tells its owner. False when it was not active."""
    now = clock.now()
    changed = Webhook.update(status="disabled", disabled_reason=reason, updated_at=now).where(
        Webhook.id == webhook_id, Webhook.status != "disabled").execute()
    if not changed:
        return False
    WebhookDelivery.update(status="failed", finished_at=now, lease_until=None,
                           next_attempt_at=None,
                           last_error="The webhook was disabled before this was delivered.",
                           ).where(WebhookDelivery.webhook == webhook_id,
                                   WebhookDelivery.status == "pending",
                                   WebhookDelivery.lease_until.is_null()
                                   | (WebhookDelivery.lease_until < now)).execute()
    webhook = Webhook.get_by_id(webhook_id)
    log.warning("webhook %s (%s) disabled: %s", webhook.id, webhook.url, reason)
    outbox.emit("webhook.disabled", user_id=webhook.user_id,
                data={"webhook_id": webhook.id, "url": webhook.url, "reason": reason})
    return True


# The log, redelivery and tests ----------------------------------------------------------


def list_deliveries(principal: Principal, webhook_id: str, status: str | None = None,
                    limit: int = pagination.DEFAULT_LIMIT,
                    cursor: str | None = None) -> pagination.Page[WebhookDelivery]:
    """A webhook's deliveries, newest first, optionally of one status."""
    webhook = endpoints.get_webhook(principal, webhook_id)
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status is one of {', '.join(STATUSES)}.", field="status")
    query = (WebhookDelivery.select(WebhookDelivery, Event).join(Event)
             .where(WebhookDelivery.webhook == webhook.id))
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    return pagination.page(query, WebhookDelivery, limit, cursor)


def get_delivery(principal: Principal, webhook_id: str,
                 delivery_id: str) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """One delivery of the caller's webhook with its attempts, first to last."""
    webhook = endpoints.get_webhook(principal, webhook_id)
    delivery = (WebhookDelivery.select(WebhookDelivery, Event).join(Event)
                .where(WebhookDelivery.id == delivery_id,
                       WebhookDelivery.webhook == webhook.id).first())
    if delivery is None:
        raise NotFound("No such delivery.", code="delivery_not_found")
    attempts = list(WebhookAttempt.select().where(WebhookAttempt.delivery == delivery.id)
                    .order_by(WebhookAttempt.number, WebhookAttempt.id))
    return delivery, attempts


def attempts_of(delivery_ids: list[str]) -> dict[str, list[WebhookAttempt]]:
    found: dict[str, list[WebhookAttempt]] = {i: [] for i in delivery_ids}
    for row in (WebhookAttempt.select().where(WebhookAttempt.delivery.in_(delivery_ids))
                .order_by(WebhookAttempt.number, WebhookAttempt.id)):
        found[row.delivery_id].append(row)
    return found


def redeliver(principal: Principal, webhook_id: str, delivery_id: str) -> WebhookDelivery:
    """Queue the event of a delivery again, as a new delivery with the same webhook-id.
    409 `webhook_disabled` while the webhook is disabled (resume it first)."""
    with database.atomic():
        webhook = endpoints.writable(principal, webhook_id)
        original, _ = get_delivery(principal, webhook_id, delivery_id)
        if webhook.status == "disabled":
            raise Conflict("This webhook is disabled; resume it first.",
                           code="webhook_disabled")
        now = clock.now()
        delivery = WebhookDelivery.create(
            id=new_id("dlv"), webhook=webhook.id, event=original.event_id,
            msg_id=original.msg_id, trigger="redelivery", status="pending",
            next_attempt_at=now, created_at=now)
    endpoints.wake()
    return WebhookDelivery.select(WebhookDelivery, Event).join(Event).where(
        WebhookDelivery.id == delivery.id).get()


def send_test(principal: Principal, webhook_id: str) -> tuple[WebhookDelivery, Outcome]:
    """Send a `webhook.test` event to this webhook only, now, once, and report how it
    went. Whatever the answer, the webhook's state does not change."""
    with database.atomic():
        webhook = endpoints.writable(principal, webhook_id)
        event = outbox.emit("webhook.test", user_id=webhook.user_id, data={
            "webhook_id": webhook.id, "message": "This is a test event."})
        delivery = WebhookDelivery.create(
            id=new_id("dlv"), webhook=webhook.id, event=event.id, msg_id=event.id,
            trigger="test", status="pending", next_attempt_at=None, created_at=clock.now())
    if not claim(delivery.id, test=True):  # nobody else claims test deliveries
        raise Conflict("The test is already being sent.", code="operation_in_progress")
    outcome = attempt(delivery.id)
    return WebhookDelivery.select(WebhookDelivery, Event).join(Event).where(
        WebhookDelivery.id == delivery.id).get(), outcome
