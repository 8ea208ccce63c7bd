"""SSH public keys on an account, handed to instances at creation.

Accepted formats are OpenSSH public keys: ssh-ed25519, ssh-rsa (at least 2048 bits) and
ecdsa-sha2-nistp256/384/521. The key blob is decoded and its structure checked (the type
inside the blob must match the one in front); the fingerprint is OpenSSH's
`SHA256:<base64 of sha256(blob) without padding>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from peewee import IntegrityError

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.models import SshKey
from appliance.services import audit, clock, pagination
from appliance.services.ids import new_id
from appliance.services.principal import Principal

MAX_KEY_LENGTH = 16_384
NAME_MAX = 100
MIN_RSA_BITS = 2048
_ECDSA_CURVES = {"ecdsa-sha2-nistp256": ("nistp256", 256),
                 "ecdsa-sha2-nistp384": ("nistp384", 384),
                 "ecdsa-sha2-nistp521": ("nistp521", 521)}
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *_ECDSA_CURVES)


@dataclass(frozen=True)
class PublicKey:
    key_type: str
    bits: int
    blob: bytes
    comment: str

    @property
    def fingerprint(self) -> str:
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    @property
    def openssh(self) -> str:
        return f"{self.key_type} {base64.b64encode(self.blob).decode()}"


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(f"Not a valid OpenSSH public key: {message}.",
                          code="invalid_ssh_key", field="public_key")


def _fields(blob: bytes) -> list[bytes]:
    """The length-prefixed strings (RFC 4251 `string`/`mpint`) that make up a key blob."""
    fields, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            raise _invalid("the key data is truncated")
        (length,) = struct.unpack(">I", blob[offset:offset + 4])
        offset += 4
        if offset + length > len(blob):
            raise _invalid("the key data is truncated")
        fields.append(blob[offset:offset + length])
        offset += length
    return fields


def _mpint_bits(value: bytes) -> int:
    return int.from_bytes(value, "big").bit_length()


def _bits(key_type: str, fields: list[bytes]) -> int:
    """Check the blob's fields for its type; return the key size in bits."""
    if key_type == "ssh-ed25519":
        if len(fields) != 2 or len(fields[1]) != 32:
            raise _invalid("an ed25519 key holds 32 bytes")
        return 256
    if key_type == "ssh-rsa":
        if len(fields) != 3:
            raise _invalid("an RSA key holds an exponent and a modulus")
        bits = _mpint_bits(fields[2])
        if bits < MIN_RSA_BITS:
            raise _invalid(f"RSA keys need at least {MIN_RSA_BITS} bits (this has {bits})")
        return bits
    curve, bits = _ECDSA_CURVES[key_type]
    if len(fields) != 3 or fields[1] != curve.encode() or not fields[2].startswith(b"\x04"):
        raise _invalid(f"not a valid {curve} point")
    return bits


def parse_public_key(text: str) -> PublicKey:
    """Parse one `type base64 [comment]` line; raise 400 `invalid_ssh_key` naming why."""
    text = (text or "").strip()
    if not text:
        raise _invalid("it is empty")
    if len(text) > MAX_KEY_LENGTH or "\n" in text or "\r" in text:
        raise _invalid("paste exactly one key, on one line")
    parts = text.split(None, 2)
    if len(parts) < 2:
        raise _invalid("expected '<type> <base64 data> [comment]'")
    key_type, data = parts[0], parts[1]
    comment = parts[2] if len(parts) > 2 else ""
    if key_type not in KEY_TYPES:
        raise _invalid(f"the type {key_type[:40]!r} is not one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("the key data is not base64") from None
    fields = _fields(blob)
    if not fields or fields[0] != key_type.encode():
        raise _invalid("the key data does not match its type")
    bits = _bits(key_type, fields)
    return PublicKey(key_type, bits, blob, comment.strip())


def add_key(principal: Principal, public_key: str, name: str = "") -> SshKey:
    """Add a key to the caller's account; 409 `ssh_key_exists` for a duplicate."""
    principal.require_scope("keys:write")
    parsed = parse_public_key(public_key)
    name = " ".join((name or parsed.comment or parsed.key_type).split())[:NAME_MAX]
    try:
        with database.atomic():
            key = SshKey.create(id=new_id("ssh"), user=principal.user, name=name,
                                key_type=parsed.key_type, bits=parsed.bits,
                                public_key=parsed.openssh, fingerprint=parsed.fingerprint,
                                created_at=clock.now())
            audit.record("ssh_key.added", actor=principal.user, target_type="ssh_key",
                         target_id=key.id, ip=principal.ip, fingerprint=parsed.fingerprint)
    except IntegrityError:
        raise Conflict("This key is already on your account.", code="ssh_key_exists",
                       details={"field": "public_key", "fingerprint": parsed.fingerprint}
                       ) from None
    return key


def list_keys(principal: Principal, limit: int = 50,
              cursor: str | None = None) -> pagination.Page[SshKey]:
    return pagination.page(SshKey.select().where(SshKey.user == principal.user), SshKey,
                           limit, cursor)


def get_key(principal: Principal, key_id: str) -> SshKey:
    key = SshKey.get_or_none(SshKey.id == key_id, SshKey.user == principal.user)
    if key is None:
        raise NotFound("No such SSH key.", code="ssh_key_not_found")
    return key


def delete_key(principal: Principal, key_id: str) -> None:
    principal.require_scope("keys:write")
    with database.atomic():
        key = get_key(principal, key_id)
        key.delete_instance()
        audit.record("ssh_key.deleted", actor=principal.user, target_type="ssh_key",
                     target_id=key_id, ip=principal.ip, fingerprint=key.fingerprint)
