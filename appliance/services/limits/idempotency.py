"""Idempotency-Key for creating requests (Stripe; draft-ietf-httpapi-idempotency-key-header).

A creating request that carries `Idempotency-Key` runs once per key and account. Its
record belongs to the credential that made it: the access tokens of the account (which
carry all of its rights) or one API key. A repeat with the same key and the same request
gets the stored status and body for 24 hours, but only for that credential and only while
its standing is what it was (`authority_of`): the account's role and, for a project's
route, the caller's role in the project. Another credential, another request or another
standing under the same key get 422 `idempotency_mismatch` (403 `idempotency_rights_changed`
for a lowered or raised role), never the stored body.

The record is written in the same transaction as what the request creates (`begin`,
`finish` and `abandon` join the caller's transaction; the API runs a request's service
call, its serialization and the record in one), so a crash leaves both or neither: a
retry after any crash replays the first answer or runs afresh. While such a transaction
is open the write lock holds a duplicate back until the first has committed, and it is
then replayed. A record committed "in flight" (a request that ran outside one transaction,
or another process's claim) answers 409 `idempotency_in_progress`, and is taken over
after IN_FLIGHT_TIMEOUT. Only successful responses are stored: a request that failed
leaves nothing behind and may be retried.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from peewee import IntegrityError

from appliance.db import database
from appliance.errors import Conflict, Forbidden, IdempotencyMismatch, InvalidRequest
from appliance.models import IdempotencyRecord
from appliance.services import clock
from appliance.services.principal import Principal

TTL = dt.timedelta(hours=24)
IN_FLIGHT_TIMEOUT = dt.timedelta(minutes=5)
KEY_MAX = 255
AUTHORITY_MAX = 120
USER_CREDENTIAL = "user"  # the account's own tokens: every right its roles give


@dataclass(frozen=True)
class Stored:
    status: int
    body: str


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > KEY_MAX or not key.isprintable():
        raise InvalidRequest(f"Idempotency-Key must be 1-{KEY_MAX} printable characters.",
                             field="Idempotency-Key")
    return key


def credential_of(principal: Principal) -> str:
    """Which credential acts: one API key, or the account's own tokens."""
    return f"key:{principal.key_id}" if principal.key_id is not None else USER_CREDENTIAL


def authority_of(principal: Principal, project_role: str | None = None) -> str:
    """The credential and the standing a stored answer was given to: the credential, the
    account's role and, on a project's route, the caller's role there ("-" for none)."""
    parts = [credential_of(principal), principal.user.role]
    if project_role is not None:
        parts.append(project_role or "-")
    return " ".join(parts)[:AUTHORITY_MAX]


def begin(owner: str, key: str, print_: str, authority: str = "") -> Stored | None:
    """Claim `key` for a new request (None), or return the stored response to replay.

    Inside the caller's transaction the claim commits (or rolls back) with it. Raises 422
    for a different request, or another credential, under the same key; 403 when the
    credential's standing changed since; 409 while the first is in flight elsewhere.
    """
    now = clock.now()
    with database.atomic():
        row = IdempotencyRecord.get_or_none(IdempotencyRecord.owner == owner,
                                            IdempotencyRecord.key == key)
        if row is not None:
            expired = row.expires_at <= now
            abandoned = row.state == "in_flight" and row.created_at + IN_FLIGHT_TIMEOUT <= now
            if not (expired or abandoned):
                return _existing(row, print_, authority)
            row.delete_instance()
        try:
            with database.atomic():
                IdempotencyRecord.create(owner=owner, key=key, fingerprint=print_,
                                         authority=authority, state="in_flight",
                                         created_at=now, expires_at=now + TTL)
        except IntegrityError:  # another process won the race (PostgreSQL)
            raise _in_progress() from None
    return None


def _credential(authority: str) -> str:
    return authority.split(" ", 1)[0] if authority else USER_CREDENTIAL


def _existing(row: IdempotencyRecord, print_: str, authority: str) -> Stored:
    if row.fingerprint != print_:
        raise IdempotencyMismatch("This Idempotency-Key was used for a different request.",
                                  details={"field": "Idempotency-Key"})
    if row.state == "in_flight":
        raise _in_progress()
    # A record from before credentials were recorded ("") is the account's own.
    if _credential(row.authority) != _credential(authority):
        raise IdempotencyMismatch(
            "This Idempotency-Key was used with another credential (an API key or a "
            "sign-in); only that credential replays it.",
            details={"field": "Idempotency-Key", "reason": "credential"})
    if row.authority and row.authority != authority:
        raise Forbidden("Your role changed since this Idempotency-Key was used; send the "
                        "request again with a new key.", code="idempotency_rights_changed")
    return Stored(row.status, row.body)


def _in_progress() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still being processed.",
                    code="idempotency_in_progress")


def finish(owner: str, key: str, status: int, body: str) -> None:
    """Store the answer to replay (in the caller's transaction when there is one)."""
    with database.atomic():
        IdempotencyRecord.update(state="done", status=status, body=body).where(
            IdempotencyRecord.owner == owner, IdempotencyRecord.key == key).execute()


def abandon(owner: str, key: str) -> None:
    """The request failed: forget the key so the client can retry with it."""
    with database.atomic():
        IdempotencyRecord.delete().where(IdempotencyRecord.owner == owner,
                                         IdempotencyRecord.key == key,
                                         IdempotencyRecord.state == "in_flight").execute()


def purge_expired() -> int:
    """Delete records older than the TTL (the scheduler's cleanup)."""
    with database.atomic():
        return IdempotencyRecord.delete().where(
            IdempotencyRecord.expires_at <= clock.now()).execute()
