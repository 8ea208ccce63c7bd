"""The one clock of the appliance. Tests move it instead of sleeping."""

from __future__ import annotations

import datetime as dt

_offset = dt.timedelta(0)
_frozen: dt.datetime | None = None


def now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    if _frozen is not None:
        return _frozen
    return dt.datetime.now(dt.timezone.utc) + _offset


def freeze(at: dt.datetime) -> None:
    """Stop the clock at `at` (aware) until `reset()`."""
    global _frozen
    _frozen = at


def advance(delta: dt.timedelta) -> None:
    """Move the clock forward (frozen or not)."""
    global _offset, _frozen
    if _frozen is not None:
        _frozen += delta
    else:
        _offset += delta


def reset() -> None:
    global _offset, _frozen
    _offset = dt.timedelta(0)
    _frozen = None


def isoformat(value: dt.datetime) -> str:
    """UTC ISO-8601 with a Z, the form every API timestamp takes."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
