"""API keys: scoped, expiring, IP-restricted, rate-limited, hashed at rest.

A secret looks like `sk_3fa9c0d2_<32 characters>`: `sk_` and an 8-character prefix shown
in lists, then 192 random bits. Only its SHA-256 is stored, with the prefix and the last
four characters so a person can tell keys apart. A key acts as its owner: limited by its
scopes and (optionally) one project, and never beyond the owner's current role, which
the project services check on every call. Rotation gives the same key a new secret; the
old one keeps working for a grace period, then is refused.

`last_used_at` and `usage_count` are counted in memory and written at most every
USAGE_FLUSH_INTERVAL (and by `flush_usage()`), not on every request.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
import string
import threading
from dataclasses import dataclass

from appliance.db import database
from appliance.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from appliance.models import ApiKey, Membership, Project, User
from appliance.services import audit, clock, pagination, projects
from appliance.services.accounts import authcache, users
from appliance.services.accounts.sessions import SCOPES, require_active
from appliance.services.events import outbox
from appliance.services.ids import hash_token, new_id
from appliance.services.limits import quotas
from appliance.services.principal import Principal

SECRET_PREFIX = "sk_"  # noqa: S105 - the marker of a key, not a secret
NAME_MAX = 100
MAX_ALLOWED_IPS = 50
MAX_RATE_LIMIT_RPM = 100_000
MAX_GRACE = dt.timedelta(days=7)
USAGE_FLUSH_INTERVAL = dt.timedelta(seconds=30)
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class NewSecret:
    """A key with its secret, which is shown this once and never again."""

    key: ApiKey
    secret: str


def _new_secret() -> tuple[str, str]:
    prefix = SECRET_PREFIX + "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    return prefix, f"{prefix}_{secrets.token_urlsafe(24)}"


def looks_like_key(token: str) -> bool:
    return token.startswith(SECRET_PREFIX)


def scopes_of(key: ApiKey) -> frozenset[str]:
    return frozenset(key.scopes.split())


def allowed_networks(key: ApiKey) -> list[str]:
    return key.allowed_ips.split() if key.allowed_ips else []


def status_of(key: ApiKey) -> str:
    """active | expired | revoked, as lists show it."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= clock.now():
        return "expired"
    return "active"


# Validation --------------------------------------------------------------------------


def _clean_scopes(principal: Principal, scopes: list[str]) -> str:
    if not scopes:
        raise InvalidRequest("Choose at least one scope.", field="scopes")
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise InvalidRequest(f"Unknown scope {unknown[0]}; scopes are {', '.join(SCOPES)}.",
                             field="scopes", details={"unknown": unknown})
    if "admin" in scopes and principal.user.role != "admin":
        raise InvalidRequest("Only administrators can create keys with the admin scope.",
                             field="scopes")
    beyond = sorted(s for s in set(scopes) if not principal.allows(s))
    if beyond:
        raise Forbidden(f"A key cannot grant the scope {beyond[0]} that it lacks itself.",
                        code="scope_denied", details={"scope": beyond[0]})
    return " ".join(s for s in SCOPES if s in scopes)


def _clean_networks(values: list[str] | None) -> str | None:
    if not values:
        return None
    if len(values) > MAX_ALLOWED_IPS:
        raise InvalidRequest(f"At most {MAX_ALLOWED_IPS} addresses or networks.",
                             field="allowed_ips")
    networks = []
    for value in values:
        try:
            networks.append(str(ipaddress.ip_network(value.strip(), strict=False)))
        except ValueError:
            raise InvalidRequest(f"{value!r} is not an IP address or CIDR network.",
                                 field="allowed_ips") from None
    return " ".join(dict.fromkeys(networks))


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise InvalidRequest("A key needs a name.", field="name")
    if len(name) > NAME_MAX:
        raise InvalidRequest(f"A key name has at most {NAME_MAX} characters.", field="name")
    return name


def _check_project(principal: Principal, project_id: str | None) -> str | None:
    if principal.project_id is not None and project_id != principal.project_id:
        raise InvalidRequest("A key restricted to a project can only create keys for it.",
                             field="project_id")
    if project_id is None:
        return None
    member = (Membership.select().join(Project)
              .where(Membership.project == project_id, Membership.user == principal.user.id,
                     Project.deleted_at.is_null()).exists())
    if not member:
        raise InvalidRequest("No such project among yours.", code="project_not_found",
                             field="project_id")
    return project_id


# Managing keys ---------------------------------------------------------------------


def create_key(principal: Principal, name: str, scopes: list[str], *,
               project_id: str | None = None, expires_at: dt.datetime | None = None,
               allowed_ips: list[str] | None = None,
               rate_limit_rpm: int | None = None) -> NewSecret:
    principal.require_scope("keys:write")
    users.require_verified(principal.user)
    name = _clean_name(name)
    clean_scopes = _clean_scopes(principal, scopes)
    networks = _clean_networks(allowed_ips)
    if expires_at is not None:
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=dt.UTC)
        if expires_at <= clock.now():
            raise InvalidRequest("expires_at must be in the future.", field="expires_at")
    if rate_limit_rpm is not None and not 1 <= rate_limit_rpm <= MAX_RATE_LIMIT_RPM:
        raise InvalidRequest(f"rate_limit_rpm must be between 1 and {MAX_RATE_LIMIT_RPM}.",
                             field="rate_limit_rpm")
    prefix, secret = _new_secret()
    with database.atomic():
        project_id = _check_project(principal, project_id)
        quotas.check(principal.user, "api_keys", 1)
        key = ApiKey.create(
            id=new_id("key"), user=principal.user, name=name, prefix=prefix,
            last_four=secret[-4:], secret_hash=hash_token(secret), scopes=clean_scopes,
            project=project_id, expires_at=expires_at, allowed_ips=networks,
            rate_limit_rpm=rate_limit_rpm, created_at=clock.now())
        audit.record("api_key.created", actor=principal.user, target_type="api_key",
                     target_id=key.id, ip=principal.ip, name=name, scopes=clean_scopes,
                     project_id=project_id)
        outbox.api_key_event("api_key.created", key, principal.user.id)
    return NewSecret(key, secret)


def active_key_count(user: User) -> int:
    now = clock.now()
    return ApiKey.select().where(
        ApiKey.user == user, ApiKey.revoked_at.is_null(),
        ApiKey.expires_at.is_null() | (ApiKey.expires_at > now)).count()


def list_keys(principal: Principal, limit: int = 50,
              cursor: str | None = None) -> pagination.Page[ApiKey]:
    """The caller's keys, newest first, revoked and expired ones included."""
    query = ApiKey.select().where(ApiKey.user == principal.user)
    if principal.project_id is not None:
        query = query.where(ApiKey.project == principal.project_id)
    rows, next_cursor = pagination.page(query, ApiKey, limit, cursor)
    return [with_pending_usage(row) for row in rows], next_cursor


def get_key(principal: Principal, key_id: str) -> ApiKey:
    query = ApiKey.select().where(ApiKey.id == key_id, ApiKey.user == principal.user)
    if principal.project_id is not None:
        query = query.where(ApiKey.project == principal.project_id)
    key = query.first()
    if key is None:
        raise NotFound("No such API key.", code="api_key_not_found")
    return with_pending_usage(key)


def _revoke(principal: Principal, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        ApiKey.update(revoked_at=key.revoked_at).where(ApiKey.id == key.id,
                                                       ApiKey.revoked_at.is_null()).execute()
        audit.record("api_key.revoked", actor=principal.user, target_type="api_key",
                     target_id=key.id, ip=principal.ip, owner=key.user_id)
        outbox.api_key_event("api_key.revoked", key, principal.user.id)
    return key


def revoke_key(principal: Principal, key_id: str) -> ApiKey:
    """Revoke one of the caller's keys; it is refused from the next request on."""
    principal.require_scope("keys:write")
    with database.atomic():
        key = _revoke(principal, get_key(principal, key_id))
    authcache.invalidate()
    return key


def rotate_key(principal: Principal, key_id: str, grace_seconds: int = 0) -> NewSecret:
    """A new secret for the same key; the old one works `grace_seconds` more (max 7 days)."""
    principal.require_scope("keys:write")
    if not 0 <= grace_seconds <= MAX_GRACE.total_seconds():
        raise InvalidRequest("grace_seconds must be between 0 and 604800 (7 days).",
                             field="grace_seconds")
    prefix, secret = _new_secret()
    now = clock.now()
    with database.atomic():
        key = get_key(principal, key_id)
        if status_of(key) != "active":
            raise InvalidRequest(f"This key is {status_of(key)}; create a new one.",
                                 code="api_key_inactive", field="key_id")
        grace = dt.timedelta(seconds=grace_seconds)
        ApiKey.update(
            prefix=prefix, last_four=secret[-4:], secret_hash=hash_token(secret),
            previous_hash=key.secret_hash if grace else None,
            previous_valid_until=now + grace if grace else None, rotated_at=now,
        ).where(ApiKey.id == key.id).execute()
        audit.record("api_key.rotated", actor=principal.user, target_type="api_key",
                     target_id=key.id, ip=principal.ip, grace_seconds=grace_seconds)
    authcache.invalidate()
    return NewSecret(ApiKey.get_by_id(key.id), secret)


def list_project_keys(principal: Principal, project_id: str, limit: int = 50,
                      cursor: str | None = None) -> pagination.Page[ApiKey]:
    """Project admins see every member's keys restricted to the project."""
    projects.access(principal, project_id, projects.MANAGE)
    query = (ApiKey.select(ApiKey, User).join(User)
             .where(ApiKey.project == project_id))
    rows, next_cursor = pagination.page(query, ApiKey, limit, cursor)
    return [with_pending_usage(row) for row in rows], next_cursor


def revoke_project_key(principal: Principal, project_id: str, key_id: str) -> ApiKey:
    principal.require_scope("keys:write")
    with database.atomic():
        projects.access(principal, project_id, projects.MANAGE)
        key = ApiKey.get_or_none(ApiKey.id == key_id, ApiKey.project == project_id)
        if key is None:
            raise NotFound("No such API key.", code="api_key_not_found")
        key = _revoke(principal, key)
    authcache.invalidate()
    return key


# Authentication --------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFacts:
    """What authenticating a key needs, read once and cached (see services/authcache)."""

    id: str
    secret_hash: str
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None
    previous_valid_until: dt.datetime | None
    rate_limit_rpm: int | None
    networks: tuple  # parsed ip_network objects; empty: any address
    user: User
    principal: Principal

    @classmethod
    def of(cls, key: ApiKey) -> KeyFacts:
        networks = tuple(ipaddress.ip_network(n) for n in allowed_networks(key))
        return cls(key.id, key.secret_hash, key.revoked_at, key.expires_at,
                   key.previous_valid_until, key.rate_limit_rpm, networks, key.user,
                   Principal(key.user, None, "api_key", scopes_of(key), key.id,
                             key.project_id))


def _ip_allowed(networks: tuple, ip: str) -> bool:
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def _facts(digest: str) -> KeyFacts | None:
    facts = authcache.get(("key", digest))
    if facts is None:
        gen = authcache.generation()
        key = (ApiKey.select(ApiKey, User).join(User)
               .where((ApiKey.secret_hash == digest) | (ApiKey.previous_hash == digest))
               .first())
        if key is None:
            return None
        facts = KeyFacts.of(key)
        authcache.put(("key", digest), facts, gen)
    return facts


def authenticate(secret: str, ip: str) -> tuple[Principal, KeyFacts]:
    """The principal an API key stands for, or 401 (unknown, revoked, expired, rotated
    out) / 403 (owner suspended, address not allowed)."""
    digest = hash_token(secret)
    key = _facts(digest)
    if key is None:
        raise Unauthorized("The API key is not valid.", code="invalid_api_key")
    now = clock.now()
    if key.revoked_at is not None:
        raise Unauthorized("This API key was revoked.", code="api_key_revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("This API key has expired.", code="api_key_expired")
    if key.secret_hash != digest and (key.previous_valid_until is None
                                      or key.previous_valid_until <= now):
        raise Unauthorized("This API key was rotated; use its new secret.",
                           code="api_key_rotated")
    require_active(key.user)
    if not _ip_allowed(key.networks, ip):
        raise Forbidden("This API key may not be used from this address.",
                        code="ip_not_allowed", details={"ip": ip})
    _count_use(key.id, now, ip)
    return key.principal, key


# Usage counting --------------------------------------------------------------------

_usage_lock = threading.Lock()
_pending: dict[str, list] = {}  # key id -> [uses, last used at, last ip]
_last_flush = [clock.now()]


def _count_use(key_id: str, now: dt.datetime, ip: str) -> None:
    with _usage_lock:
        entry = _pending.get(key_id)
        if entry is None:
            _pending[key_id] = [1, now, ip]
        else:
            entry[0] += 1
            entry[1] = now
            entry[2] = ip
        due = now - _last_flush[0] >= USAGE_FLUSH_INTERVAL
    if due:
        flush_usage()


def flush_usage() -> int:
    """Write the counted uses to the keys (one transaction); return the keys written."""
    with _usage_lock:
        batch = dict(_pending)
        _pending.clear()
        _last_flush[0] = clock.now()
    if not batch:
        return 0
    with database.atomic():
        for key_id, (uses, last_used_at, ip) in batch.items():
            ApiKey.update(usage_count=ApiKey.usage_count + uses, last_used_at=last_used_at,
                          last_used_ip=ip[:64]).where(ApiKey.id == key_id).execute()
    return len(batch)


def with_pending_usage(key: ApiKey) -> ApiKey:
    """The key with uses not yet written added in, so lists are current."""
    with _usage_lock:
        entry = _pending.get(key.id)
        if entry is not None:
            key.usage_count = (key.usage_count or 0) + entry[0]
            key.last_used_at, key.last_used_ip = entry[1], entry[2]
    return key


def forget_pending_usage() -> None:
    """Tests: drop uncounted uses (each test has its own database)."""
    with _usage_lock:
        _pending.clear()
        _last_flush[0] = clock.now()

