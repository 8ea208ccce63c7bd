"""Counting events in sliding windows: failed sign-ins and API rate limits.

`CounterStore` is the contract; `MemoryCounterStore` keeps counts in this process (the
appliance is one process). A shared store (a database table, Redis) can implement the
same two methods when several processes serve one appliance.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol

from appliance.errors import RateLimited
from appliance.services import clock


class CounterStore(Protocol):
    def hit(self, key: str, window: float, now: float) -> int:
        """Record one event for `key`; return the events within `window` seconds."""

    def count(self, key: str, window: float, now: float) -> tuple[int, float]:
        """Events for `key` within the window, and the seconds until the oldest expires."""

    def clear(self, key: str) -> None:
        """Forget every event of `key`."""

    def take(self, key: str, limit: int, window: float, now: float) -> tuple[bool, int, float]:
        """Record one event unless `limit` were already seen within the window; return
        (taken, events in the window, seconds until the oldest expires)."""


class MemoryCounterStore:
    def __init__(self) -> None:
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: str, window: float, now: float) -> deque[float]:
        events = self._events.setdefault(key, deque())
        while events and events[0] <= now - window:
            events.popleft()
        return events

    def hit(self, key: str, window: float, now: float) -> int:
        with self._lock:
            events = self._trim(key, window, now)
            events.append(now)
            return len(events)

    def count(self, key: str, window: float, now: float) -> tuple[int, float]:
        with self._lock:
            events = self._trim(key, window, now)
            if not events:
                self._events.pop(key, None)
                return 0, 0.0
            return len(events), events[0] + window - now

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)

    def take(self, key: str, limit: int, window: float, now: float) -> tuple[bool, int, float]:
        with self._lock:
            events = self._trim(key, window, now)
            taken = len(events) < limit
            if taken:
                events.append(now)
            return taken, len(events), events[0] + window - now


store: CounterStore = MemoryCounterStore()


def _now() -> float:
    return clock.now().timestamp()


def check(key: str, limit: int, window: float, message: str) -> None:
    """Raise RateLimited (with Retry-After) when `key` already had `limit` events."""
    count, retry_after = store.count(key, window, _now())
    if count >= limit:
        raise RateLimited(int(retry_after) + 1, message)


def hit(key: str, window: float) -> int:
    return store.hit(key, window, _now())


def clear(key: str) -> None:
    store.clear(key)


def take(key: str, limit: int, window: float) -> tuple[bool, int, float]:
    return store.take(key, limit, window, _now())


def reset_all() -> None:
    """Forget every counter (tests, and an operator's restart, start from zero)."""
    global store  # noqa: PLW0603 - the one process-wide store is swapped, not mutated
    store = MemoryCounterStore()
