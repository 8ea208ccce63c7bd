"""Webhook deliveries sent in batches: how the dispatcher (and the tests, through `deliver_due`)
sends.

One worker takes up to BATCH due deliveries of one webhook with one UPDATE ... RETURNING
(`claim_batch`: a lease, nothing logged yet) and sends them one at a time
(`send_batch`), so the dispatcher's per-endpoint bound still counts requests in flight.
Each transaction writes the outcomes of the attempts just made and logs the next CHUNK
(lease, attempt count, attempt row) before any of them goes out: the log never shows
fewer requests than a receiver saw, and a delivery costs a fraction of a commit. A chunk's
lease covers its attempts' timeouts; a delivery whose batch lease ran out and that another
worker took is not sent (its lease is no longer this batch's). The webhook row (status,
URL, secrets) is read again for every chunk, the URL is checked by the SSRF guard for
every attempt, and each event's body is built once per batch. A failed attempt, a paused
or disabled webhook, or a stopping dispatcher ends the batch: attempts logged but not
sent are taken back and the rest is released, due again at once. Outcomes are written as
services/webhooks/deliveries.py describes.

Raw SQL on purpose: on this path peewee's query building cost more than SQLite did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from appliance.db import database, db_time, raw_sql
from appliance.models import Event, Webhook
from appliance.services import clock
from appliance.services.webhooks import deliveries, endpoints
from appliance.services.webhooks.deliveries import Outcome

BATCH = 25  # deliveries of one endpoint one worker takes at a time
CHUNK = 4  # attempts logged, and later their outcomes written, per transaction


@dataclass
class _Queued:
    """A delivery of a batch: what its requests need."""

    id: str
    msg_id: str
    trigger: str
    body: bytes
    number: int = 0  # the attempt under way, once started


@dataclass
class Batch:
    """Due deliveries of one webhook taken by one worker under one lease (`lease_until`
    holds `lease` on each of them while nobody else has them)."""

    webhook_id: str
    lease: dt.datetime
    deliveries: list[_Queued]
    _secrets: dict[tuple, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.deliveries)


@dataclass
class _Sent:
    delivery: _Queued
    webhook: Webhook
    started: dt.datetime
    answer: deliveries.Answer


def _marks(values: list) -> str:
    """The placeholders of an IN list: values only ever travel as parameters."""
    return ", ".join("?" * len(values))


def due_webhooks(limit: int = 50, exclude_webhooks: Collection[str] = ()) -> list[str]:
    """Active webhooks with deliveries due now, the longest waiting first, leaving out
    those in `exclude_webhooks` (the ones with enough in flight)."""
    now, excluded = db_time(clock.now()), list(exclude_webhooks)
    leaving_out = f"AND d.webhook_id NOT IN ({_marks(excluded)}) " if excluded else ""
    rows = raw_sql(
        "SELECT d.webhook_id FROM webhook_delivery d "  # noqa: S608 - placeholders only
        "JOIN webhook w ON w.id = d.webhook_id "
        "WHERE d.status = 'pending' AND w.status = 'active' AND d.next_attempt_at <= ? "
        f"AND (d.lease_until IS NULL OR d.lease_until < ?) {leaving_out}"
        "GROUP BY d.webhook_id ORDER BY MIN(d.next_attempt_at) LIMIT ?",
        (now, now, *excluded, limit)).fetchall()
    return [row[0] for row in rows]


def claim_batch(webhook_id: str, limit: int = BATCH) -> Batch | None:
    """Lease up to `limit` due deliveries of an active webhook, oldest first, in one
    statement (nobody else can take them until the lease ends); None when none is due.
    Nothing is attempted or logged yet: `send_batch` does that."""
    now = clock.now()
    lease = now + deliveries.LEASE
    stamp = db_time(now)
    with database.atomic():
        # The outer conditions repeat the inner ones: a database that lets another claim
        # run between the two (PostgreSQL's READ COMMITTED) re-checks them per row.
        rows = raw_sql(
            "UPDATE webhook_delivery SET lease_until = ? WHERE id IN ("
            " SELECT d.id FROM webhook_delivery d JOIN webhook w ON w.id = d.webhook_id"
            " WHERE d.webhook_id = ? AND w.status = 'active' AND d.status = 'pending'"
            " AND d.next_attempt_at <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)"
            " ORDER BY d.next_attempt_at, d.id LIMIT ?)"
            " AND status = 'pending' AND (lease_until IS NULL OR lease_until < ?)"
            " RETURNING id, event_id, msg_id, trigger, next_attempt_at",
            (db_time(lease), webhook_id, stamp, stamp, limit, stamp)).fetchall()
    if not rows:
        return None
    rows.sort(key=lambda row: (row[4], row[0]))
    event_ids = list({row[1] for row in rows})
    found = raw_sql("SELECT id, type, data, created_at FROM event "  # noqa: S608
                    f"WHERE id IN ({_marks(event_ids)})", event_ids)
    bodies = {event_id: deliveries.payload_of(kind, Event.created_at.python_value(created),
                                              data)
              for event_id, kind, data, created in found}
    return Batch(webhook_id, lease, [_Queued(row[0], row[2], row[3], bodies[row[1]])
                                     for row in rows])


def send_batch(batch: Batch, keep_going: Callable[[], bool] = lambda: True) -> list[Outcome]:
    """Send a claimed batch one delivery at a time, CHUNK attempts per transaction (see
    the module docstring), and return the outcomes. It stops early - releasing what it
    had not started, due again at once - after a failed attempt, when the webhook is no
    longer active, or when `keep_going()` (asked before every request) says so."""
    queue = list(batch.deliveries)
    sent: list[_Sent] = []
    unsent: list[_Queued] = []
    outcomes: list[Outcome] = []
    while True:
        going = (bool(queue) and not unsent and all(deliveries.answered_ok(s.answer) for s in sent)
                 and keep_going())
        chunk, queue = (queue[:CHUNK], queue[CHUNK:]) if going else ([], queue)
        written, started, webhook = _step(batch, sent, unsent, chunk, queue)
        outcomes += written
        sent, unsent = [], []
        if not started:
            if webhook is None or not chunk:
                return outcomes  # _step released the queue
            continue  # another worker had these (their lease had run out); go on
        for delivery in started:
            if (sent and not deliveries.answered_ok(sent[-1].answer)) or not keep_going():
                unsent.append(delivery)  # not after a failure: _step takes its log back
                continue
            at = clock.now()
            sent.append(_Sent(delivery, webhook, at, deliveries.send_request(
                delivery.id, delivery.msg_id, webhook, delivery.body, started=at,
                secrets=_signing_secrets(batch, webhook, at))))


def _signing_secrets(batch: Batch, webhook: Webhook, at: dt.datetime) -> list[str]:
    """webhooks.signing_secrets, unsealed once per batch for the same sealed values."""
    key = (webhook.secret_sealed, webhook.previous_secret_sealed,
           webhook.previous_valid_until is not None and webhook.previous_valid_until > at)
    if key not in batch._secrets:
        batch._secrets[key] = endpoints.signing_secrets(webhook, at)
    return batch._secrets[key]


def _step(batch: Batch, sent: list[_Sent], unsent: list[_Queued], chunk: list[_Queued],
          queue: list[_Queued]) -> tuple[list[Outcome], list[_Queued], Webhook | None]:
    """One transaction: record what was sent, take back the logged attempts that were not
    sent (after a failure), then start `chunk` (lease, attempt count, log row) if the
    webhook is still active. Returns the outcomes, the deliveries started and the webhook
    as it is now (None when it is no longer active: the queue and the chunk were
    released)."""
    now = clock.now()
    with database.atomic():
        for delivery in unsent:
            raw_sql("DELETE FROM webhook_attempt WHERE delivery_id = ? AND number = ?",
                    (delivery.id, delivery.number))
            raw_sql("UPDATE webhook_delivery SET attempts = attempts - 1, lease_until = NULL "
                    "WHERE id = ?", (delivery.id,))
        outcomes, disable = [], None
        for item in sent:
            outcome, reason = deliveries.write_outcome(
                item.delivery.id, item.delivery.trigger, item.delivery.number, item.webhook,
                started=item.started, answer=item.answer)
            outcomes.append(outcome)
            disable = disable or reason
        webhook = _read_webhook(batch.webhook_id)
        active = webhook is not None and webhook.status == "active" and disable is None
        started: list[_Queued] = []
        if active and chunk:
            # Long enough for every attempt of the chunk to time out.
            lease = now + deliveries.LEASE + dt.timedelta(
                seconds=deliveries.TIMEOUT * (len(chunk) - 1))
            ids = [d.id for d in chunk]
            numbers = dict(raw_sql(
                "UPDATE webhook_delivery SET attempts = attempts + 1, "  # noqa: S608
                f"lease_until = ? WHERE id IN ({_marks(ids)}) AND status = 'pending' "
                "AND lease_until = ? RETURNING id, attempts",
                (db_time(lease), *ids, db_time(batch.lease))).fetchall())
            started = [d for d in chunk if d.id in numbers]
            for delivery in started:
                delivery.number = numbers[delivery.id]
            for delivery in started:
                raw_sql("INSERT INTO webhook_attempt (delivery_id, number, started_at, "
                        "duration_ms, response_excerpt) VALUES (?, ?, ?, 0, '')",
                        (delivery.id, delivery.number, db_time(now)))
        else:
            queue = chunk + queue
        if not chunk or not active:
            if queue:
                ids = [d.id for d in queue]
                raw_sql("UPDATE webhook_delivery SET lease_until = NULL "  # noqa: S608
                        f"WHERE id IN ({_marks(ids)}) AND lease_until = ?",
                        (*ids, db_time(batch.lease)))
        if disable is not None:
            deliveries.disable_webhook(batch.webhook_id, disable)
    return outcomes, started, webhook if active else None


def _read_webhook(webhook_id: str) -> Webhook | None:
    row = raw_sql(
        "SELECT user_id, url, secret_sealed, previous_secret_sealed, previous_valid_until, "
        "failing_since, status FROM webhook WHERE id = ?", (webhook_id,)).fetchone()
    if row is None:
        return None
    return Webhook(id=webhook_id, user=row[0], url=row[1], secret_sealed=row[2],
                   previous_secret_sealed=row[3],
                   previous_valid_until=Webhook.previous_valid_until.python_value(row[4]),
                   failing_since=Webhook.failing_since.python_value(row[5]), status=row[6])


def deliver_due(max_deliveries: int | None = None) -> int:
    """Claim and send due deliveries in this thread, batch by batch, until none is due;
    return how many attempts were made. (The dispatcher does this on a thread pool.)"""
    sent = 0
    while max_deliveries is None or sent < max_deliveries:
        progressed = False
        for webhook_id in due_webhooks():
            room = BATCH if max_deliveries is None else min(BATCH, max_deliveries - sent)
            batch = claim_batch(webhook_id, room) if room > 0 else None
            if batch is not None:
                made = len(send_batch(batch))
                sent += made
                progressed = progressed or made > 0
        if not progressed:
            return sent
    return sent
