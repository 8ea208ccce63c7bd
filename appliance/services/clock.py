"""The one clock of the appliance. Tests move it instead of sleeping."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class _Clock:
    offset: dt.timedelta = dt.timedelta(0)
    frozen: dt.datetime | None = None


_clock = _Clock()


def now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    if _clock.frozen is not None:
        return _clock.frozen
    return dt.datetime.now(dt.UTC) + _clock.offset


def freeze(at: dt.datetime) -> None:
    """Stop the clock at `at` (aware) until `reset()`."""
    _clock.frozen = at


def advance(delta: dt.timedelta) -> None:
    """Move the clock forward (frozen or not)."""
    if _clock.frozen is not None:
        _clock.frozen += delta
    else:
        _clock.offset += delta


def reset() -> None:
    _clock.offset = dt.timedelta(0)
    _clock.frozen = None


def isoformat(value: dt.datetime) -> str:
    """UTC ISO-8601 with a Z, the form every API timestamp takes."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
