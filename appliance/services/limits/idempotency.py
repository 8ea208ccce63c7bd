"""Idempotency-Key for creating requests (Stripe; draft-ietf-httpapi-idempotency-key-header).

A creating request that carries `Idempotency-Key` is recorded (per acting user) before it
runs. A repeat with the same key and the same request gets the stored status and body for
24 hours; with a different request 422 `idempotency_mismatch`; while the first is still
running 409 `idempotency_in_progress`. Only successful responses are stored: a request
that failed (validation, a conflict, a crash) leaves nothing behind and may be retried.
A record left "in flight" by a crash is taken over after IN_FLIGHT_TIMEOUT.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from peewee import IntegrityError

from appliance.db import database
from appliance.errors import Conflict, IdempotencyMismatch, InvalidRequest
from appliance.models import IdempotencyRecord
from appliance.services import clock

TTL = dt.timedelta(hours=24)
IN_FLIGHT_TIMEOUT = dt.timedelta(minutes=5)
KEY_MAX = 255


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


def begin(owner: str, key: str, print_: str) -> Stored | None:
    """Claim `key` for a new request (None), or return the stored response to replay.

    Raises 422 for a different request under the same key, 409 while it is in flight.
    """
    now = clock.now()
    with database.atomic():
        row = IdempotencyRecord.get_or_none(IdempotencyRecord.owner == owner,
                                            IdempotencyRecord.key == key)
        if row is not None:
            expired = row.expires_at <= now
            abandoned = row.state == "in_flight" and row.created_at + IN_FLIGHT_TIMEOUT <= now
            if not (expired or abandoned):
                return _existing(row, print_)
            row.delete_instance()
        try:
            with database.atomic():
                IdempotencyRecord.create(owner=owner, key=key, fingerprint=print_,
                                         state="in_flight", created_at=now,
                                         expires_at=now + TTL)
        except IntegrityError:  # another process won the race (PostgreSQL)
            raise _in_progress() from None
    return None


def _existing(row: IdempotencyRecord, print_: str) -> Stored:
    if row.fingerprint != print_:
        raise IdempotencyMismatch("This Idempotency-Key was used for a different request.",
                                  details={"field": "Idempotency-Key"})
    if row.state == "in_flight":
        raise _in_progress()
    return Stored(row.status, row.body)


def _in_progress() -> Conflict:
    return Conflict("A request with this Idempotency-Key is still being processed.",
                    code="idempotency_in_progress")


def finish(owner: str, key: str, status: int, body: str) -> None:
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
