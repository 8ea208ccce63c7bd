"""Signatures on webhooks: the ones we send (Standard Webhooks v1) and the ones Stripe
sends us.

Outbound deliveries carry `webhook-id`, `webhook-timestamp` and `webhook-signature:
v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the base64-decoded part of a
`whsec_` secret. While a secret is being rotated both the old and the new one sign, so the
header holds several space-separated signatures and a receiver accepts any of them.
`verify` is the receiving side, for our tests and for operators who check our webhooks in
Python.

Stripe signs differently: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`
keyed with the whole endpoint secret as text; `verify_stripe` checks that.

Both verifiers refuse a timestamp more than `tolerance` seconds away from now, so a
captured request cannot be replayed later. Every failure raises `SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from secrets import token_bytes

from appliance.services import clock

SECRET_PREFIX = "whsec_"  # noqa: S105 - the marker of a secret, not a secret
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
DEFAULT_TOLERANCE = 300


class SignatureError(Exception):
    """A request whose signature headers are missing, stale or do not match."""


def generate_secret() -> str:
    """A new endpoint secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX}")
    encoded = secret[len(SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("a webhook secret is base64 after its prefix") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 signature>` of one message under one `whsec_` secret."""
    digest = _digest(_key(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated."""
    if not secrets:
        raise ValueError("at least one secret signs a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header a delivery of `body` carries besides the transport's own."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "Content-Type": "application/json",
    }


def _header(received: Mapping[str, str], name: str) -> str:
    for key, value in received.items():
        if key.lower() == name:
            return value
    raise SignatureError(f"the {name} header is missing")


def _unix_seconds(raw: str) -> int:
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()):
        raise SignatureError("the timestamp is not a number of seconds")
    return int(raw)


def _check_timestamp(timestamp: int, tolerance: int, now: float | None) -> None:
    current = clock.now().timestamp() if now is None else now
    if timestamp < current - tolerance:
        raise SignatureError("the timestamp is too old")
    if timestamp > current + tolerance:
        raise SignatureError("the timestamp is in the future")


def _decoded_v1(signatures: str) -> list[bytes]:
    found = []
    for entry in signatures.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            found.append(base64.b64decode(encoded, validate=True))
        except binascii.Error:
            continue
    return found


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a Standard Webhooks request signed with `secret`; return quietly if it holds.

    Header names match in any case. Raises SignatureError when a header is missing, the
    timestamp is more than `tolerance` seconds from `now` (default: the appliance clock),
    or no `v1` signature in the header matches. ValueError means `secret` is malformed.
    """
    msg_id = _header(headers, "webhook-id")
    timestamp = _unix_seconds(_header(headers, "webhook-timestamp"))
    candidates = _decoded_v1(_header(headers, "webhook-signature"))
    _check_timestamp(timestamp, tolerance, now)
    expected = _digest(_key(secret), msg_id, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no signature matches")


def _stripe_digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def stripe_signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The `Stripe-Signature` Stripe would send; for tests of the billing webhook."""
    return f"t={timestamp},v1={_stripe_digest(secret, timestamp, body)}"


def _parse_stripe_header(header: str) -> tuple[int, list[str]]:
    timestamps, signatures = [], []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
    if len(timestamps) != 1:
        raise SignatureError("the Stripe-Signature header has no single timestamp")
    if not signatures:
        raise SignatureError("the Stripe-Signature header has no v1 signature")
    return _unix_seconds(timestamps[0]), signatures


def verify_stripe(
    secret: str,
    header: str,
    body: bytes,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> None:
    """Check a Stripe webhook's `Stripe-Signature` header against the endpoint `secret`.

    Raises SignatureError when the header is empty or malformed, its timestamp is more
    than `tolerance` seconds from `now` (default: the appliance clock), or none of its
    `v1` signatures matches.
    """
    if not header:
        raise SignatureError("the Stripe-Signature header is missing")
    if not secret:
        raise SignatureError("no Stripe webhook secret is configured")
    timestamp, signatures = _parse_stripe_header(header)
    _check_timestamp(timestamp, tolerance, now)
    expected = _stripe_digest(secret, timestamp, body).encode()
    if not any(hmac.compare_digest(expected, sig.encode()) for sig in signatures):
        raise SignatureError("no Stripe signature matches")
