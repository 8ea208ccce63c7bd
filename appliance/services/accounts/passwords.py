"""Password hashing and the password rules.

Hashes are argon2id with the OWASP minimum (m=19 MiB, t=2, p=1; REFERENCE.md), stored as
the PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`) so the parameters can be raised
later: `needs_rehash` tells when a stored hash is below the current parameters.

Rules (ASVS): at least 8 characters, up to 128 allowed, not one of the 10,000 most
common passwords, not the account's email address. A broken rule raises
`InvalidRequest` whose code names it.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from appliance.errors import InvalidRequest

MIN_LENGTH = 8
MAX_LENGTH = 128
COMMON_COUNT = 10_000

_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1,
                         hash_len=32, salt_len=16)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the account does not exist, so both paths cost the same
    (made on first use: hashing costs about 40 ms that start-up need not pay)."""
    return _hasher.hash("the appliance dummy password")


@functools.cache
def _common_passwords() -> frozenset[str]:
    """The COMMON_COUNT most common passwords, read on first use from zxcvbn's list.

    The line is read from zxcvbn's data file without importing the package: importing
    it loads every list and builds its ranked dictionaries (about 14 MB, kept for the
    process's life) for ten thousand strings (about 1 MB).
    """
    spec = importlib.util.find_spec("zxcvbn")
    assert spec is not None and spec.origin is not None, "zxcvbn is not installed"
    source = Path(spec.origin).with_name("frequency_lists.py")
    with source.open(encoding="utf-8") as lines:
        for line in lines:
            name, _, value = line.strip().partition(": ")
            if name == '"passwords"':
                # the line is `"passwords": "123456,password,...".split(","),`
                words = ast.literal_eval(value.removesuffix(".split(\",\"),"))
                return frozenset(words.split(",")[:COMMON_COUNT])
    raise RuntimeError(f"no password list in {source}")


def check_rules(password: str, email: str = "", field: str = "password") -> None:
    """Raise InvalidRequest naming the first rule `password` breaks."""
    if len(password) < MIN_LENGTH:
        raise InvalidRequest(f"The password must have at least {MIN_LENGTH} characters.",
                             code="password_too_short", field=field)
    if len(password) > MAX_LENGTH:
        raise InvalidRequest(f"The password must have at most {MAX_LENGTH} characters.",
                             code="password_too_long", field=field)
    lowered = password.lower()
    if lowered in _common_passwords() or len(set(password)) < 3:
        raise InvalidRequest("This password is too common; choose another.",
                             code="password_too_common", field=field)
    local = email.lower().split("@", 1)[0]
    if email and (email.lower() in lowered or lowered == local):
        raise InvalidRequest("The password must not contain your email address.",
                             code="password_contains_email", field=field)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when `password` matches; a missing hash still costs one verification."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
