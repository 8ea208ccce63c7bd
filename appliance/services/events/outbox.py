"""The event outbox: every state change records an event in the same transaction.

`emit(type, data=..., project_id=..., user_id=...)` is called by the service that makes
the change, inside its `database.atomic()` block, so the event commits (or rolls back)
with the change. An event concerns a project (its members see it), an account (that user
sees it), or both. In the same transaction `emit` queues one delivery per matching
active webhook (through the fan-out services/webhooks/endpoints.py registers), so nothing
is lost between the change and its webhooks, whatever happens to the process afterwards.

Event ids sort in the order the events were recorded (`evt_` + the time in microseconds
in hex + random), and so do the `webhook-id`s derived from them. Event data never holds
a secret: only ids, names, states and messages.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from appliance.db import database
from appliance.models import ApiKey, Event, Instance, Job, User
from appliance.services import clock
from appliance.services.events.event_types import EVENT_TYPES

log = logging.getLogger(__name__)


# Instance timeline kinds that are not events under their own name (others are dropped).
_INSTANCE_KINDS = {"instance.running": "instance.started",
                   "instance.missing": "instance.failed"}


# What runs for each new event, inside its transaction. Registered once at start-up by
# `appliance.services.wiring` (the modules that consume events import this one, never the
# other way round).
# - Fan-outs queue durable work for the event (the webhooks' deliveries): they run in the
#   event's transaction and a failure fails the change, so no event misses its deliveries.
#   Each returns how many things it queued; when any, its `wake` runs after the commit.
# - Listeners make what may be lost without harm (notifications, waking the live stream):
#   each runs in a savepoint; one that raises is logged and rolled back alone.
Listener = Callable[[Event], object]  # what it returns is ignored
FanOut = Callable[[Event], int]
_listeners: list[Listener] = []
_fan_outs: list[tuple[FanOut, Callable[[], None]]] = []


def listen(listener: Listener) -> Listener:
    """Register `listener(event)` to run inside the transaction of every emit."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def fan_out_to(fan_out: FanOut, wake: Callable[[], None]) -> None:
    """Register `fan_out(event)`, which queues work in the event's transaction, and the
    `wake()` that tells its worker after the commit."""
    if (fan_out, wake) not in _fan_outs:
        _fan_outs.append((fan_out, wake))


def _run_listeners(event: Event) -> None:
    for listener in list(_listeners):
        try:
            with database.atomic():
                listener(event)
        except Exception:
            log.exception("event listener %s failed on %s %s", listener.__qualname__,
                          event.type, event.id)


def new_event_id() -> str:
    """`evt_` + microseconds since the epoch (13 hex digits) + 32 random bits."""
    micros = int(clock.now().timestamp() * 1_000_000)
    return f"evt_{micros:013x}{secrets.token_hex(4)}"


def emit(type: str, *, data: dict[str, Any], project_id: str | None = None,
         user_id: str | None = None) -> Event:
    """Record an event and queue its webhook deliveries.

    Call inside the transaction of the change (`with database.atomic():`); outside one,
    the event gets a transaction of its own. `type` must be in EVENT_TYPES (ValueError
    otherwise: a programming error, not a client's).
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}; add it to EVENT_TYPES")
    if not _fan_outs:
        raise RuntimeError("nothing would deliver this event: call "
                           "appliance.services.wiring.connect() at start-up")
    with database.atomic():
        event = Event.create(id=new_event_id(), type=type, user=user_id, project=project_id,
                             data=json.dumps(data, default=str, separators=(",", ":")),
                             created_at=clock.now())
        woken = [wake for fan_out, wake in _fan_outs if fan_out(event)]
        _run_listeners(event)
    for wake in woken:
        wake()
    return event


def emit_to_administrators(type: str, *, data: dict[str, Any]) -> list[Event]:
    """`emit` the operator's news once per active administrator, as an account event of
    each (their notifications, their webhooks, their live stream). Call inside the
    transaction of the change."""
    with database.atomic():
        return [emit(type, data=data, user_id=admin.id) for admin in
                User.select(User.id).where(User.role == "admin", User.status == "active")
                .order_by(User.id)]


def data_of(event: Event) -> dict[str, Any]:
    return json.loads(event.data or "{}")


# Helpers for the services that emit ----------------------------------------------------


def _iso(value: dt.datetime | None) -> str | None:
    return clock.isoformat(value) if value is not None else None


def instance_snapshot(instance: Instance) -> dict[str, Any]:
    return {"id": instance.id, "name": instance.name, "project_id": instance.project_id,
            "status": instance.status, "power_state": instance.power_state,
            "ipv4": instance.ipv4, "ipv6": instance.ipv6, "plan_id": instance.plan_id,
            "image_id": instance.image_id}


def instance_event(instance: Instance | str, kind: str, message: str,
                   job: Job | None = None) -> Event | None:
    """The event for an instance timeline entry of `kind`, when it is one (see
    EVENT_TYPES); None for timeline-only kinds. Call inside the entry's transaction."""
    kind = _INSTANCE_KINDS.get(kind, kind)
    if kind not in EVENT_TYPES or not kind.startswith("instance."):
        return None
    row = Instance.get_by_id(instance if isinstance(instance, str) else instance.id)
    return emit(kind, data={"instance": instance_snapshot(row), "message": message,
                            "job_id": job.id if job is not None else None},
                project_id=row.project_id)


def job_finished(job_id: str) -> Event:
    """job.succeeded or job.failed for a job that has just finished (inside its update)."""
    job = Job.get_by_id(job_id)
    return emit(f"job.{job.status}", project_id=job.project_id, data={"job": {
        "id": job.id, "type": job.type, "status": job.status, "project_id": job.project_id,
        "instance_id": job.instance_id, "error": job.error, "error_code": job.error_code,
        "created_at": _iso(job.created_at), "finished_at": _iso(job.finished_at)}})


def api_key_event(type: str, key: ApiKey, actor_id: str) -> Event:
    """api_key.created / api_key.revoked: the key's name and limits, never its secret."""
    return emit(type, user_id=key.user_id, project_id=key.project_id, data={
        "api_key": {"id": key.id, "name": key.name, "scopes": key.scopes.split(),
                    "project_id": key.project_id, "expires_at": _iso(key.expires_at),
                    "owner_id": key.user_id},
        "actor_id": actor_id})
