"""Retention: the event log, the webhook delivery log and read notifications are kept for
EVENT_RETENTION_DAYS (default 90), then deleted by the daily `purge_old_events` task.

What goes, once older than the retention period:

- read notifications (by when they were made) whose email is not still waiting to go;
  unread ones stay until they are read;
- finished webhook deliveries (succeeded or failed, by when they finished) and their
  attempts; a pending delivery stays whatever its age;
- events that no remaining delivery refers to, so a pending delivery (or a recent
  redelivery of an old event) keeps its event. Notifications of a deleted event keep
  their text; their link to the event is cleared (the foreign key's SET NULL).

Resource metrics (services/metrics) have their own retention per resolution (minute,
5-minute and hourly rows: the INSTANCE_METRICS_* settings), purged by the hourly
`purge_old_metrics` task through `purge_metrics`.

Deletes run in batches of BATCH rows, each its own short write transaction with a pause
between them, so a first purge of years of history never holds SQLite's write lock for
long: requests and the job runner write in between. Each batch is found before its
transaction and checked again inside it. Safe to run twice or late.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from peewee import fn

from appliance import config
from appliance.db import database
from appliance.models import Event, Notification, WebhookAttempt, WebhookDelivery
from appliance.services import clock, settings
from appliance.services.metrics import store as metrics_store

BATCH = 5000
PAUSE_SECONDS = 0.05  # between batches: lets waiting writers take the lock

log = logging.getLogger("appliance.retention")


def cutoff() -> dt.datetime:
    """The time before which rows are purged (now minus EVENT_RETENTION_DAYS)."""
    return clock.now() - dt.timedelta(days=settings.get(config.active(), "EVENT_RETENTION_DAYS"))


def purge_old(batch: int = BATCH) -> dict[str, int]:
    """Delete what is past the retention period; return how many rows of each kind went."""
    before = cutoff()
    counts = dict.fromkeys(("notifications", "webhook_attempts", "webhook_deliveries",
                            "events"), 0)
    counts["notifications"] = _in_batches(Notification, (
        Notification.read_at.is_null(False), Notification.created_at < before,
        Notification.email_status.is_null()
        | Notification.email_status.not_in(("pending", "sending"))), batch)

    def with_attempts(ids: list[str]) -> None:
        counts["webhook_attempts"] += (WebhookAttempt.delete()
                                       .where(WebhookAttempt.delivery.in_(ids)).execute())

    counts["webhook_deliveries"] = _in_batches(WebhookDelivery, (
        WebhookDelivery.status != "pending", WebhookDelivery.finished_at.is_null(False),
        WebhookDelivery.finished_at < before), batch, with_attempts)
    still_needed = WebhookDelivery.select(WebhookDelivery.id).where(
        WebhookDelivery.event == Event.id)
    counts["events"] = _in_batches(Event, (Event.created_at < before,
                                           ~fn.EXISTS(still_needed)), batch)
    if any(counts.values()):
        log.info("retention: purged %s (older than %s)", counts, clock.isoformat(before))
    return counts


def purge_metrics() -> dict[str, int]:
    """Delete resource metric rows past their resolution's retention."""
    counts = metrics_store.purge(clock.now())
    if any(counts.values()):
        log.info("retention: purged metric rows %s", counts)
    return counts


def _in_batches(model: Any, conditions: tuple, batch: int,
                first: Callable[[list[str]], None] | None = None) -> int:
    """Delete the rows matching `conditions`, `batch` at a time, one transaction each.

    The candidates are found before the transaction (a scan of an unindexed column must
    not hold the write lock) and checked again inside it by primary key, so a row that
    changed meanwhile (a delivery queued again for an old event) stays. `first(ids)` runs
    in the transaction before the delete (a delivery's attempts).
    """
    total = 0
    while True:
        found = [row for (row,) in model.select(model.id).where(*conditions)
                 .limit(batch).tuples()]
        if found:
            with database.atomic():
                ids = [row for (row,) in model.select(model.id)
                       .where(model.id.in_(found), *conditions).tuples()]
                if ids:
                    if first is not None:
                        first(ids)
                    total += model.delete().where(model.id.in_(ids)).execute()
        if len(found) < batch:
            return total
        time.sleep(PAUSE_SECONDS)
