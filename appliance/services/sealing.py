"""Secrets the appliance must read back later (a generated instance password until its
owner has seen it) are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key
derived from SECRET_KEY. Changing SECRET_KEY makes sealed values unreadable, which
`unseal` reports as None rather than an error."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken

from appliance import config


def _fernet() -> Fernet:
    secret = config.active()["SECRET_KEY"].encode()
    key = hmac.new(secret, b"appliance sealing", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(value: str) -> str:
    return _fernet().encrypt(value.encode()).decode()


def unseal(sealed: str | None) -> str | None:
    if not sealed:
        return None
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        return None
