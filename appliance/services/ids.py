"""Prefixed random ids (`usr_...`) and secret tokens with their stored hashes."""

from __future__ import annotations

import hashlib
import secrets


def new_id(prefix: str) -> str:
    """`prefix_` + 20 random base32-ish characters (about 100 bits), sortable by nothing."""
    return f"{prefix}_{secrets.token_hex(10)}"


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """A URL-safe secret of `nbytes` random bytes (256 bits by default)."""
    return prefix + secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """What is stored for a high-entropy token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()
