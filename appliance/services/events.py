"""The event outbox: every state change records an event in the same transaction.

`emit(type, data=..., project_id=..., user_id=...)` is called by the service that makes
the change, inside its `database.atomic()` block, so the event commits (or rolls back)
with the change. An event concerns a project (its members see it), an account (that user
sees it), or both. In the same transaction `emit` queues one delivery per matching
active webhook (services/webhooks.py), so nothing is lost between the change and its
webhooks, whatever happens to the process afterwards.

Event ids sort in the order the events were recorded (`evt_` + the time in microseconds
in hex + random), and so do the `webhook-id`s derived from them. Event data never holds
a secret: only ids, names, states and messages.
"""

from __future__ import annotations

import importlib
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import Event, Instance, Job, Membership, Project
from appliance.services import clock, pagination
from appliance.services.sessions import Principal

TYPE_MAX = 60

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventType:
    description: str
    example: dict[str, Any]


_INSTANCE = {"id": "ins_3f9a0c1d2e4b5a6c7d8e", "name": "web-1",
             "project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "status": "running",
             "power_state": "running", "ipv4": "10.0.0.12", "ipv6": None,
             "plan_id": "pln_small", "image_id": "img_5e6f7a8b9c0d1e2f3a4b"}
_JOB = {"id": "job_7c8d9e0f1a2b3c4d5e6f", "type": "instance.start", "status": "succeeded",
        "project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "instance_id": "ins_3f9a0c1d2e4b5a6c7d8e",
        "error": None, "error_code": None, "created_at": "2025-01-31T12:00:00Z",
        "finished_at": "2025-01-31T12:00:04Z"}


def _instance_example(message: str, status: str = "running", power: str = "running"):
    return {"instance": {**_INSTANCE, "status": status, "power_state": power},
            "message": message, "job_id": _JOB["id"]}


EVENT_TYPES: dict[str, EventType] = {
    "instance.created": EventType(
        "An instance was accepted; its creation job is queued.",
        _instance_example("Created by ada@example.com", "creating", "unknown")),
    "instance.ready": EventType(
        "A new instance is running (with its address, when the engine gave one).",
        _instance_example("Running on node-1")),
    "instance.started": EventType("An instance was started.", _instance_example("Started")),
    "instance.stopped": EventType(
        "An instance was stopped or shut down (also when found stopped on the engine).",
        _instance_example("Shut down", "stopped", "stopped")),
    "instance.rebooted": EventType("An instance was rebooted or reset.",
                                   _instance_example("Rebooted")),
    "instance.resized": EventType("An instance now has another plan.",
                                  _instance_example("Now Large")),
    "instance.rebuilt": EventType("An instance was reinstalled from an image.",
                                  _instance_example("Rebuilt from Debian 12")),
    "instance.deleted": EventType("An instance was destroyed.",
                                  _instance_example("Deleted", "deleted", "missing")),
    "instance.failed": EventType(
        "An instance could not be created, or vanished from its engine.",
        _instance_example("The engine refused the image", "failed", "missing")),
    "backup.created": EventType(
        "A backup of an instance was made.",
        {"backup": {"id": "bak_1a2b3c4d5e6f7a8b9c0d", "instance_id": _INSTANCE["id"],
                    "size_bytes": 734003200}, "job_id": _JOB["id"]}),
    "backup.restored": EventType(
        "An instance was restored from a backup.",
        {"backup": {"id": "bak_1a2b3c4d5e6f7a8b9c0d", "instance_id": _INSTANCE["id"]},
         "job_id": _JOB["id"]}),
    "job.succeeded": EventType("An asynchronous operation finished.", {"job": _JOB}),
    "job.failed": EventType(
        "An asynchronous operation failed; `error` says why.",
        {"job": {**_JOB, "status": "failed", "error": "The engine did not answer",
                 "error_code": "engine_error"}}),
    "billing.low_balance": EventType(
        "The prepaid balance fell below an alert threshold.",
        {"balance": 450, "threshold": 500, "currency": "EUR"}),
    "billing.suspended": EventType(
        "The account ran out of credit; its instances were stopped.",
        {"balance": -20, "currency": "EUR", "reason": "balance"}),
    "billing.grace_started": EventType(
        "The account is out of credit with priced instances: they are stopped when the "
        "grace period ends, unless credit is added.",
        {"currency": "EUR", "grace_ends_at": "2025-02-03T12:00:00Z"}),
    "billing.credited": EventType(
        "Credit was added to the account: a grant, top-up, promo code, refund or positive "
        "adjustment. `reference_type` is the kind of reference (stripe, promo, grant, ...).",
        {"amount": 2000, "currency": "EUR", "type": "topup", "balance_after": 2450,
         "reference_type": "stripe", "entry_id": 42}),
    "invoice.issued": EventType(
        "A monthly invoice was issued.",
        {"invoice": {"id": "inv_0f1e2d3c4b5a69788796", "number": "2025-0001",
                     "total": 1234, "currency": "EUR"}}),
    "api_key.created": EventType(
        "An API key was created (never with its secret).",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": "2025-12-31T23:59:59Z", "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"},
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "api_key.revoked": EventType(
        "An API key was revoked.",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": None, "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"},
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "api_key.expiring": EventType(
        "An API key expires within 7 days (told once per key).",
        {"api_key": {"id": "key_9f8e7d6c5b4a39281706", "name": "ci",
                     "scopes": ["instances:read"], "project_id": None,
                     "expires_at": "2025-12-31T23:59:59Z",
                     "owner_id": "usr_1a2b3c4d5e6f7a8b9c0d"}}),
    "member.added": EventType(
        "Someone was added to a project.",
        {"project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "user_id": "usr_5d6e7f8a9b0c1d2e3f4a",
         "email": "grace@example.com", "role": "member",
         "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "member.removed": EventType(
        "Someone was removed from a project, or left it.",
        {"project_id": "prj_0a1b2c3d4e5f6a7b8c9d", "user_id": "usr_5d6e7f8a9b0c1d2e3f4a",
         "role": "member", "actor_id": "usr_1a2b3c4d5e6f7a8b9c0d"}),
    "webhook.test": EventType(
        "A test sent from the webhook's page or `POST /webhooks/{id}/test`; only that "
        "webhook receives it.",
        {"webhook_id": "whk_2b3c4d5e6f7a8b9c0d1e", "message": "This is a test event."}),
    "webhook.disabled": EventType(
        "A webhook was disabled after five days of failed deliveries or a 410 answer.",
        {"webhook_id": "whk_2b3c4d5e6f7a8b9c0d1e", "url": "https://example.com/hooks",
         "reason": "Every delivery failed for 5 days."}),
}

# Instance timeline kinds that are not events under their own name (others are dropped).
_INSTANCE_KINDS = {"instance.running": "instance.started",
                   "instance.missing": "instance.failed"}


# Listeners: called with each new event inside its transaction (each in a savepoint; one
# that raises is logged and rolled back alone, the change and its event still commit).
# Notifications are made here; the live stream is woken. The modules that register are
# imported on the first emit, so no caller has to remember to import them.
Listener = Callable[[Event], None]
_listeners: list[Listener] = []
_LISTENER_MODULES = ("appliance.services.notifications", "appliance.services.event_stream")


def listen(listener: Listener) -> Listener:
    """Register `listener(event)` to run inside the transaction of every emit."""
    if listener not in _listeners:
        _listeners.append(listener)
    return listener


def _run_listeners(event: Event) -> None:
    for module in _LISTENER_MODULES:
        importlib.import_module(module)  # registers on first import; then a dict lookup
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
    from appliance.services import webhooks

    with database.atomic():
        event = Event.create(id=new_event_id(), type=type, user=user_id, project=project_id,
                             data=json.dumps(data, default=str, separators=(",", ":")),
                             created_at=clock.now())
        queued = webhooks.fan_out(event)
        _run_listeners(event)
    if queued:
        webhooks.wake()
    return event


def data_of(event: Event) -> dict[str, Any]:
    return json.loads(event.data or "{}")


# Helpers for the services that emit ----------------------------------------------------


def _iso(value) -> str | None:
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


def api_key_event(type: str, key, actor_id: str) -> Event:
    """api_key.created / api_key.revoked: the key's name and limits, never its secret."""
    return emit(type, user_id=key.user_id, project_id=key.project_id, data={
        "api_key": {"id": key.id, "name": key.name, "scopes": key.scopes.split(),
                    "project_id": key.project_id, "expires_at": _iso(key.expires_at),
                    "owner_id": key.user_id},
        "actor_id": actor_id})


# Reading -------------------------------------------------------------------------------


def _visible(principal: Principal):
    """Events of the caller's account, and of the live projects they are a member of."""
    if principal.project_id is not None:
        return Event.project == principal.project_id
    member_of = (Membership.select(Membership.project)
                 .join(Project, on=(Membership.project == Project.id))
                 .where(Membership.user == principal.user.id, Project.deleted_at.is_null()))
    return (Event.user == principal.user.id) | Event.project.in_(member_of)


visible_to = _visible  # the live stream (services/event_stream.py) reads by the same rule


def check_type(type: str | None, field: str = "type") -> str | None:
    if type is not None and type not in EVENT_TYPES:
        raise InvalidRequest(f"Unknown event type {type[:TYPE_MAX]!r}; GET /event-types "
                             "lists them.", field=field)
    return type


def list_events(principal: Principal, type: str | None = None, project_id: str | None = None,
                limit: int = pagination.DEFAULT_LIMIT,
                cursor: str | None = None) -> tuple[list[Event], str | None]:
    """Events the caller may see, newest first; 404 for a project that is not theirs."""
    from appliance.services import projects  # projects emits events: imported late

    principal.require_scope("webhooks:read")
    check_type(type)
    query = Event.select().where(_visible(principal))
    if project_id is not None:
        projects.access(principal, project_id, projects.READ)
        query = query.where(Event.project == project_id)
    if type is not None:
        query = query.where(Event.type == type)
    return pagination.page(query, Event, limit, cursor)
