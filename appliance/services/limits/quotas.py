"""Per-account limits: operator defaults, per-account overrides, and requests to raise them.

`check(user, resource, amount)` is what other services call before they create
something; it raises 403 `quota_exceeded` naming the resource, the limit and what is in
use. What is in use is counted by functions the owning services register
(`register_usage`), so this module knows no instance or backup model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest, NotFound, QuotaExceeded
from appliance.models import LimitOverride, LimitRequest, Setting, User
from appliance.services import audit, clock, pagination
from appliance.services.accounts.admin import get_user, require_admin
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.principal import Principal


@dataclass(frozen=True)
class Resource:
    name: str
    label: str
    unit: str
    default: int


RESOURCES = (
    Resource("instances", "Instances", "instances", 10),
    Resource("vcpus", "Total vCPUs", "vCPUs", 16),
    Resource("memory_mb", "Total memory", "MB", 32768),
    Resource("backups", "Backups", "backups", 20),
    Resource("template_storage_gb", "Template storage", "GB", 50),
    Resource("api_keys", "API keys", "keys", 25),
)
RESOURCES_BY_NAME = {resource.name: resource for resource in RESOURCES}
MAX_LIMIT = 1_000_000
_DEFAULT_KEY = "limits.default."
_usage: dict[str, Callable[[User], int]] = {}


@dataclass(frozen=True)
class Limit:
    resource: Resource
    used: int
    limit: int
    overridden: bool

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)


def register_usage(resource: str, count: Callable[[User], int]) -> None:
    """Let the service owning `resource` say how much of it a user has in use."""
    _usage[_resource(resource).name] = count


def _resource(name: str, field: str = "resource") -> Resource:
    resource = RESOURCES_BY_NAME.get(name)
    if resource is None:
        raise InvalidRequest(f"Unknown resource {name!r}; resources are "
                             f"{', '.join(RESOURCES_BY_NAME)}.", field=field)
    return resource


def _check_value(value: int, field: str = "value") -> int:
    if not 0 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"A limit is between 0 and {MAX_LIMIT}.", field=field)
    return value


def defaults() -> dict[str, int]:
    """The operator's default limit for each resource."""
    stored = {row.key.removeprefix(_DEFAULT_KEY): json.loads(row.value)
              for row in Setting.select().where(Setting.key.startswith(_DEFAULT_KEY))}
    return {r.name: int(stored.get(r.name, r.default)) for r in RESOURCES}


def used(user: User, resource: str) -> int:
    count = _usage.get(resource)
    return count(user) if count is not None else 0


def limits(user: User) -> list[Limit]:
    """Used and limit of every resource for one account."""
    base = defaults()
    overrides = {row.resource: row.value
                 for row in LimitOverride.select().where(LimitOverride.user == user)}
    return [Limit(r, used(user, r.name), overrides.get(r.name, base[r.name]),
                  r.name in overrides) for r in RESOURCES]


def limit_of(user: User, resource: str) -> int:
    override = LimitOverride.get_or_none(LimitOverride.user == user,
                                         LimitOverride.resource == resource)
    return override.value if override is not None else defaults()[resource]


def check(user: User, resource: str, amount: int = 1) -> None:
    """403 `quota_exceeded` when adding `amount` would pass the user's limit.

    Call inside the transaction that creates the thing (BEGIN IMMEDIATE serialises
    writers, so two concurrent creations cannot both slip under the limit).
    """
    name = _resource(resource).name
    in_use, limit = used(user, name), limit_of(user, name)
    if in_use + amount > limit:
        label = RESOURCES_BY_NAME[name].label
        raise QuotaExceeded(f"{label}: {in_use} of {limit} in use; this needs {amount} more. "
                            "Ask for a higher limit on the limits page.",
                            details={"resource": name, "limit": limit, "used": in_use,
                                     "requested": amount})


# Operator side ---------------------------------------------------------------------


def set_defaults(principal: Principal, values: dict[str, int]) -> dict[str, int]:
    require_admin(principal)
    for name, value in values.items():
        _resource(name, field=name)
        _check_value(value, field=name)
    now = clock.now()
    with database.atomic():
        for name, value in values.items():
            (Setting.insert(key=_DEFAULT_KEY + name, value=json.dumps(value), updated_at=now)
             .on_conflict(conflict_target=[Setting.key],
                          update={Setting.value: json.dumps(value), Setting.updated_at: now})
             .execute())
        details: dict[str, Any] = dict(values)  # resource names, none of record()'s own
        audit.record("limits.defaults_set", actor=principal.user, ip=principal.ip, **details)
    return defaults()


def set_override(principal: Principal, user_id: str, resource: str,
                 value: int | None) -> list[Limit]:
    """Set (or with None, remove) one account's limit for a resource."""
    require_admin(principal)
    name = _resource(resource).name
    if value is not None:
        _check_value(value)
    with database.atomic():
        user = get_user(principal, user_id)
        _store_override(user, name, value)
        audit.record("limits.override_set", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip, resource=name, value=value)
    return limits(user)


def _store_override(user: User, resource: str, value: int | None) -> None:
    if value is None:
        LimitOverride.delete().where(LimitOverride.user == user,
                                     LimitOverride.resource == resource).execute()
        return
    now = clock.now()
    (LimitOverride.insert(user=user, resource=resource, value=value, updated_at=now)
     .on_conflict(conflict_target=[LimitOverride.user, LimitOverride.resource],
                  update={LimitOverride.value: value, LimitOverride.updated_at: now})
     .execute())


# Limit-increase requests -----------------------------------------------------------


def request_increase(principal: Principal, resource: str, requested: int,
                     reason: str = "") -> LimitRequest:
    """Ask the operator for a higher limit; one pending request per resource."""
    name = _resource(resource).name
    _check_value(requested, field="requested")
    reason = (reason or "").strip()
    if len(reason) > 1000:
        raise InvalidRequest("The reason has at most 1000 characters.", field="reason")
    with database.atomic():
        current = limit_of(principal.user, name)
        if requested <= current:
            raise InvalidRequest(f"Your limit is already {current}; ask for more than that.",
                                 field="requested")
        pending = LimitRequest.select().where(LimitRequest.user == principal.user,
                                              LimitRequest.resource == name,
                                              LimitRequest.status == "pending").exists()
        if pending:
            raise Conflict("A request for this resource is already waiting for a decision.",
                           code="limit_request_pending", details={"field": "resource"})
        row = LimitRequest.create(id=new_id("lrq"), user=principal.user, resource=name,
                                  current_limit=current, requested=requested, reason=reason,
                                  created_at=clock.now())
        audit.record("limits.requested", actor=principal.user, target_type="limit_request",
                     target_id=row.id, ip=principal.ip, resource=name, requested=requested)
        outbox.emit_to_administrators("limit_request.created", data={"limit_request": {
            "id": row.id, "resource": name, "current_limit": current, "requested": requested,
            "reason": reason, "user_id": principal.user.id, "email": principal.user.email}})
    return row


def list_requests(principal: Principal, limit: int = 50,
                  cursor: str | None = None) -> pagination.Page[LimitRequest]:
    query = LimitRequest.select().where(LimitRequest.user == principal.user)
    return pagination.page(query, LimitRequest, limit, cursor)


def list_all_requests(principal: Principal, status: str | None = None, limit: int = 50,
                      cursor: str | None = None) -> pagination.Page[LimitRequest]:
    require_admin(principal)
    query = LimitRequest.select(LimitRequest, User).join(
        User, on=(LimitRequest.user == User.id))
    if status:
        query = query.where(LimitRequest.status == status)
    return pagination.page(query, LimitRequest, limit, cursor)


def decide(principal: Principal, request_id: str, approve: bool, note: str = "") -> LimitRequest:
    """Approve (the requested limit becomes the account's override) or decline."""
    require_admin(principal)
    note = (note or "").strip()[:1000]
    with database.atomic():
        row = LimitRequest.get_or_none(LimitRequest.id == request_id)
        if row is None:
            raise NotFound("No such limit request.", code="limit_request_not_found")
        if row.status != "pending":
            raise Conflict(f"This request was already {row.status}.",
                           code="limit_request_decided")
        status = "approved" if approve else "declined"
        now = clock.now()
        LimitRequest.update(status=status, decided_by=principal.user, decided_at=now,
                            decision_note=note).where(LimitRequest.id == row.id).execute()
        if approve:
            _store_override(row.user, row.resource, row.requested)
        audit.record(f"limits.request_{status}", actor=principal.user,
                     target_type="limit_request", target_id=row.id, ip=principal.ip,
                     user_id=row.user_id, resource=row.resource, requested=row.requested)
    return LimitRequest.get_by_id(row.id)
