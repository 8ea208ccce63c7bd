"""Webhooks: endpoints that receive the events of an account or of one project.

A webhook belongs to the user who made it. Without a project it receives the events the
user may see (their account's and those of every project they belong to); with one, only
that project's (and only while the owner is still a member). Managing a project's
webhooks needs the admin role there; someone else's webhook answers 404.

The URL is checked against the SSRF guard (services/webhooks/ssrf.py) when it is set - private
LAN targets only when the operator's WEBHOOKS_ALLOW_PRIVATE says so - and again at every
delivery, since DNS may change. The signing secret (`whsec_...`) is shown once, when the
webhook is made or its secret rotated, and kept sealed. A rotation may keep the old
secret signing too for a grace period (default 24 hours, at most 7 days).

Status: active (receives events), paused (receives nothing new; deliveries already
queued wait for the resume), disabled (by the appliance after a 410 answer or five days
of failures; `disabled_reason` says which). Resuming makes it active again.

Deliveries are queued by `fan_out` in the transaction of the event (services/events/outbox.py)
and sent by the dispatcher (services/webhooks/deliveries.py, services/webhooks/dispatcher.py).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from peewee import ModelSelect

from appliance import config
from appliance.db import database
from appliance.errors import Conflict, Forbidden, InvalidRequest, NotFound
from appliance.models import Event, Membership, Project, User, Webhook, WebhookDelivery
from appliance.services import audit, clock, pagination, projects, sealing, settings
from appliance.services.accounts import users
from appliance.services.accounts.admin import require_admin
from appliance.services.events.event_types import EVENT_TYPES
from appliance.services.ids import new_id
from appliance.services.principal import Principal
from appliance.services.webhooks import signing, ssrf

URL_MAX = 2000
DESCRIPTION_MAX = 500
MAX_WEBHOOKS_PER_USER = 50
DEFAULT_GRACE_SECONDS = 86400
MAX_GRACE = dt.timedelta(days=7)
ALL = "*"
STATUSES = ("active", "paused", "disabled")
# Sent only to the webhook being tested; subscribing to it changes nothing.
TARGETED_TYPES = ("webhook.test",)

SETTING_TTL = 2.0

_wakers: list[Callable[[], None]] = []
_allow_private_cache: list = []  # [database, monotonic time read, value]


@dataclass(frozen=True)
class NewSecret:
    """A webhook with its signing secret, which is shown this once."""

    webhook: Webhook
    secret: str


def add_waker(waker: Callable[[], None]) -> None:
    """Call `waker()` whenever deliveries are queued (the dispatcher registers itself)."""
    if waker not in _wakers:
        _wakers.append(waker)


def remove_waker(waker: Callable[[], None]) -> None:
    if waker in _wakers:
        _wakers.remove(waker)


def wake() -> None:
    """Tell the running dispatcher that deliveries were queued (no-op without one)."""
    for waker in list(_wakers):
        waker()


def forget_cached_setting() -> None:
    """Drop the cached WEBHOOKS_ALLOW_PRIVATE (the next delivery reads the database)."""
    _allow_private_cache.clear()


def allow_private(*, cached: bool = False) -> bool:
    """The operator's setting: may webhooks reach private LAN addresses? With `cached`
    (deliveries) it is read at most every SETTING_TTL seconds: a change applies within
    that."""
    now, source = time.monotonic(), id(database.obj)
    found = _allow_private_cache
    if cached and found and found[0] == source and now - found[1] < SETTING_TTL:
        return found[2]
    value = bool(settings.get(config.active(), "WEBHOOKS_ALLOW_PRIVATE"))
    _allow_private_cache[:] = [source, now, value]
    return value


# Validation --------------------------------------------------------------------------


def _bad_url(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="webhook_invalid_url", field="url")


def check_url(url: str | None) -> str:
    """The URL stripped, or 400 `webhook_invalid_url` naming the field `url`."""
    url = (url or "").strip()
    if not url:
        raise _bad_url("A webhook needs a URL.")
    if len(url) > URL_MAX:
        raise _bad_url(f"A webhook URL has at most {URL_MAX} characters.")
    try:
        ssrf.check_url(url, allow_private=allow_private())
    except ssrf.UnsafeURL as exc:
        raise _bad_url(f"This URL cannot receive webhooks: {exc.message}.") from None
    return url


def _clean_description(description: str | None) -> str:
    description = (description or "").strip()
    if len(description) > DESCRIPTION_MAX:
        raise InvalidRequest(f"A description has at most {DESCRIPTION_MAX} characters.",
                             field="description")
    return description


def _clean_types(types: list[str] | None) -> str:
    """The stored form of a subscription: JSON "*" or a sorted list of known types."""
    if types is None:
        return json.dumps(ALL)
    if not types:
        raise InvalidRequest("Choose at least one event type, or \"*\" for all.",
                             field="event_types")
    unknown = sorted({t for t in types if t != ALL and t not in EVENT_TYPES})
    if unknown:
        raise InvalidRequest(f"Unknown event type {unknown[0][:60]!r}; GET /event-types "
                             "lists them.", field="event_types",
                             details={"unknown": [u[:60] for u in unknown[:10]]})
    if ALL in types:
        return json.dumps(ALL)
    return json.dumps(sorted(set(types)))


def event_types_of(webhook: Webhook) -> list[str]:
    """The subscribed types; ["*"] means every type."""
    stored = json.loads(webhook.event_types)
    return [ALL] if stored == ALL else list(stored)


def subscribed(webhook: Webhook, event_type: str) -> bool:
    types = event_types_of(webhook)
    return types == [ALL] or event_type in types


def _check_project(principal: Principal, project_id: str | None) -> str | None:
    if principal.project_id is not None and project_id != principal.project_id:
        raise InvalidRequest("A key restricted to a project can only make webhooks for it.",
                             field="project_id")
    if project_id is None:
        return None
    try:
        projects.access(principal, project_id, projects.MANAGE)
    except NotFound:
        raise InvalidRequest("No such project among yours.", code="project_not_found",
                             field="project_id") from None
    return project_id


# Managing webhooks -----------------------------------------------------------------


def create_webhook(principal: Principal, url: str, *, event_types: list[str] | None = None,
                   project_id: str | None = None, description: str = "") -> NewSecret:
    """A new active webhook and its secret (shown once). 400 naming the field for a bad
    URL (`webhook_invalid_url`), unknown event type or long description."""
    principal.require_scope("webhooks:write")
    users.require_verified(principal.user)
    url = check_url(url)
    types = _clean_types(event_types)
    description = _clean_description(description)
    secret = signing.generate_secret()
    now = clock.now()
    with database.atomic():
        project_id = _check_project(principal, project_id)
        count = Webhook.select().where(Webhook.user == principal.user.id).count()
        if count >= MAX_WEBHOOKS_PER_USER:
            raise Conflict(f"An account has at most {MAX_WEBHOOKS_PER_USER} webhooks.",
                           code="webhook_limit")
        webhook = Webhook.create(
            id=new_id("whk"), user=principal.user.id, project=project_id, url=url,
            description=description, event_types=types, secret_sealed=sealing.seal(secret),
            status="active", created_at=now, updated_at=now)
        audit.record("webhook.created", actor=principal.user, target_type="webhook",
                     target_id=webhook.id, ip=principal.ip, url=url, project_id=project_id)
    return NewSecret(webhook, secret)


def _own(principal: Principal) -> ModelSelect[Webhook]:
    query = Webhook.select().where(Webhook.user == principal.user.id)
    if principal.project_id is not None:
        query = query.where(Webhook.project == principal.project_id)
    return query


def list_webhooks(principal: Principal, limit: int = pagination.DEFAULT_LIMIT,
                  cursor: str | None = None,
                  project_id: str | None = None) -> pagination.Page[Webhook]:
    """The caller's webhooks, newest first (only one project's for a restricted key)."""
    principal.require_scope("webhooks:read")
    query = _own(principal)
    if project_id is not None:
        query = query.where(Webhook.project == project_id)
    return pagination.page(query, Webhook, limit, cursor)


STATUSES = ("active", "paused", "disabled")


def list_every_account(principal: Principal, status: str | None = None,
                       limit: int = pagination.DEFAULT_LIMIT,
                       cursor: str | None = None) -> pagination.Page[Webhook]:
    """Every account's webhooks, for administrators (403 `admin_only` otherwise), newest
    first, each with its owner's row joined (`webhook.user`); `status` keeps one status."""
    require_admin(principal)
    query = Webhook.select(Webhook, User).join(User, on=(Webhook.user == User.id))
    if status:
        if status not in STATUSES:
            raise InvalidRequest(f"status is one of {', '.join(STATUSES)}.", field="status")
        query = query.where(Webhook.status == status)
    return pagination.page(query, Webhook, limit, cursor)


def count_with_status(status: str) -> int:
    return Webhook.select().where(Webhook.status == status).count()


def get_webhook(principal: Principal, webhook_id: str) -> Webhook:
    """One of the caller's webhooks; 404 `webhook_not_found` for anyone else's."""
    principal.require_scope("webhooks:read")
    webhook = _own(principal).where(Webhook.id == webhook_id).first()
    if webhook is None:
        raise NotFound("No such webhook.", code="webhook_not_found")
    return webhook


def writable(principal: Principal, webhook_id: str) -> Webhook:
    """The caller's webhook to change: write scope, and admin of its project if any."""
    principal.require_scope("webhooks:write")
    webhook = get_webhook(principal, webhook_id)
    if webhook.project_id is not None:
        try:
            projects.access(principal, webhook.project_id, projects.MANAGE)
        except NotFound:
            raise Forbidden("You are no longer a member of this webhook's project; you can "
                            "only delete it.", code="role_denied",
                            details={"required_role": projects.MANAGE}) from None
    return webhook


def update_webhook(principal: Principal, webhook_id: str, *, url: str | None = None,
                   description: str | None = None, event_types: list[str] | None = None) -> Webhook:
    """Change the URL, description or subscription; what is None stays."""
    changes: dict = {}
    if url is not None:
        changes["url"] = check_url(url)
    if description is not None:
        changes["description"] = _clean_description(description)
    if event_types is not None:
        changes["event_types"] = _clean_types(event_types)
    with database.atomic():
        webhook = writable(principal, webhook_id)
        if changes:
            Webhook.update(updated_at=clock.now(), **changes).where(
                Webhook.id == webhook.id).execute()
            audit.record("webhook.updated", actor=principal.user, target_type="webhook",
                         target_id=webhook.id, ip=principal.ip, fields=sorted(changes))
    return Webhook.get_by_id(webhook.id)


def pause_webhook(principal: Principal, webhook_id: str) -> Webhook:
    """Stop sending: new events are not queued, queued deliveries wait for the resume."""
    with database.atomic():
        webhook = writable(principal, webhook_id)
        if webhook.status == "disabled":
            raise Conflict("This webhook is disabled; resume it instead.",
                           code="invalid_state", details={"status": webhook.status})
        if webhook.status == "active":
            Webhook.update(status="paused", updated_at=clock.now()).where(
                Webhook.id == webhook.id).execute()
            audit.record("webhook.paused", actor=principal.user, target_type="webhook",
                         target_id=webhook.id, ip=principal.ip)
    return Webhook.get_by_id(webhook_id)


def resume_webhook(principal: Principal, webhook_id: str) -> Webhook:
    """Make a paused or disabled webhook active again (its URL is checked again)."""
    with database.atomic():
        webhook = writable(principal, webhook_id)
        if webhook.status != "active":
            check_url(webhook.url)
            Webhook.update(status="active", disabled_reason=None, failing_since=None,
                           updated_at=clock.now()).where(Webhook.id == webhook.id).execute()
            audit.record("webhook.resumed", actor=principal.user, target_type="webhook",
                         target_id=webhook.id, ip=principal.ip, previous=webhook.status)
    wake()  # deliveries held while paused
    return Webhook.get_by_id(webhook_id)


def delete_webhook(principal: Principal, webhook_id: str) -> None:
    """Delete a webhook with its deliveries. Its owner may, even outside its project."""
    principal.require_scope("webhooks:write")
    with database.atomic():
        webhook = get_webhook(principal, webhook_id)
        Webhook.delete().where(Webhook.id == webhook.id).execute()
        audit.record("webhook.deleted", actor=principal.user, target_type="webhook",
                     target_id=webhook.id, ip=principal.ip, url=webhook.url)


def rotate_secret(principal: Principal, webhook_id: str,
                  grace_seconds: int = DEFAULT_GRACE_SECONDS) -> NewSecret:
    """A new secret, shown once. The old one keeps signing for `grace_seconds` (0-7 days),
    so deliveries meanwhile carry two signatures."""
    if not 0 <= grace_seconds <= MAX_GRACE.total_seconds():
        raise InvalidRequest("grace_seconds must be between 0 and 604800 (7 days).",
                             field="grace_seconds")
    secret = signing.generate_secret()
    now = clock.now()
    with database.atomic():
        webhook = writable(principal, webhook_id)
        grace = dt.timedelta(seconds=grace_seconds)
        Webhook.update(
            secret_sealed=sealing.seal(secret),
            previous_secret_sealed=webhook.secret_sealed if grace else None,
            previous_valid_until=now + grace if grace else None, updated_at=now,
        ).where(Webhook.id == webhook.id).execute()
        audit.record("webhook.secret_rotated", actor=principal.user, target_type="webhook",
                     target_id=webhook.id, ip=principal.ip, grace_seconds=grace_seconds)
    return NewSecret(Webhook.get_by_id(webhook.id), secret)


def signing_secrets(webhook: Webhook, now: dt.datetime | None = None) -> list[str]:
    """The secrets that sign a delivery now: the current one, then the previous one while
    its grace period lasts. Empty when the current one cannot be unsealed (SECRET_KEY
    changed): the webhook needs a new secret."""
    now = now or clock.now()
    current = sealing.unseal(webhook.secret_sealed)
    if current is None:
        return []
    found = [current]
    if webhook.previous_valid_until is not None and webhook.previous_valid_until > now:
        previous = sealing.unseal(webhook.previous_secret_sealed)
        if previous is not None:
            found.append(previous)
    return found


def forget_expired_secrets() -> int:
    """Drop previous secrets whose grace period is over; return how many."""
    now = clock.now()
    with database.atomic():
        return Webhook.update(previous_secret_sealed=None, previous_valid_until=None).where(
            Webhook.previous_valid_until.is_null(False),
            Webhook.previous_valid_until <= now).execute()


# Fan-out -----------------------------------------------------------------------------


def _members(project_id: str) -> ModelSelect[Membership]:
    return (Membership.select(Membership.user)
            .join(Project, on=(Membership.project == Project.id))
            .where(Membership.project == project_id, Project.deleted_at.is_null()))


def receivers(event: Event) -> list[Webhook]:
    """Active webhooks that receive `event`: the user's own account-wide webhooks for
    an account event; for a project event, that project's webhooks and the account-wide
    ones of its members (owners still members in both cases)."""
    if event.type in TARGETED_TYPES:
        return []
    clauses = []
    if event.user_id is not None:
        clauses.append((Webhook.user == event.user_id) & Webhook.project.is_null())
    if event.project_id is not None:
        members = _members(event.project_id)
        clauses.append(Webhook.user.in_(members)
                       & (Webhook.project.is_null() | (Webhook.project == event.project_id)))
    if not clauses:
        return []
    where = clauses[0]
    for clause in clauses[1:]:
        where = where | clause
    candidates = Webhook.select().where(Webhook.status == "active", where)
    return [webhook for webhook in candidates if subscribed(webhook, event.type)]


def fan_out(event: Event) -> int:
    """Queue one delivery of `event` per receiving webhook, due now. Called by
    events.emit inside the event's transaction; returns how many were queued."""
    now = clock.now()
    rows = [{"id": new_id("dlv"), "webhook": webhook.id, "event": event.id,
             "msg_id": event.id, "trigger": "event", "status": "pending",
             "next_attempt_at": now, "created_at": now}
            for webhook in receivers(event)]
    if rows:
        WebhookDelivery.insert_many(rows).execute()
    return len(rows)
