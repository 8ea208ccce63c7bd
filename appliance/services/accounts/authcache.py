"""A short-lived in-process cache of authorization facts: API keys by secret hash and
project access by (user, project).

Authenticating a key and checking a project role are on the path of nearly every API
request; reading them from the database each time costs more than the rest of the
request. Entries live at most TTL seconds and are dropped at once, in this process,
when a service changes what they were read from (`invalidate()` after the change is
committed: revoking a key, changing members, suspending a user, ...). Another process
sharing the database (PostgreSQL deployments) sees such changes within TTL.

An entry is stored with the generation read *before* the database was, so a read that
raced with a change is never cached as current.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

TTL = 5.0
MAX_ENTRIES = 20_000

_lock = threading.Lock()
_generation = 0
_entries: dict[Any, tuple[int, float, Any]] = {}


def generation() -> int:
    return _generation


def get(key: Any) -> Any | None:
    entry = _entries.get(key)
    if entry is None:
        return None
    gen, expires, value = entry
    if gen != _generation or expires < time.monotonic():
        return None
    return value


def put(key: Any, value: Any, gen: int) -> None:
    """Cache `value` read under generation `gen` (dropped if anything changed since)."""
    with _lock:
        if gen != _generation:
            return
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[key] = (gen, time.monotonic() + TTL, value)


def invalidate() -> None:
    """Forget everything: call after committing a change to keys, members, projects or
    users' standing."""
    global _generation  # noqa: PLW0603 - the one process-wide generation counter
    with _lock:
        _generation += 1
        _entries.clear()


def invalidates(change: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a service function whose change alters who may do what: the cache is
    dropped when it returns (its transaction is committed by then) or fails."""

    @functools.wraps(change)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return change(*args, **kwargs)
        finally:
            invalidate()

    return wrapped
