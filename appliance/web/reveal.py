"""Show something once, on the page a post redirects to (post/redirect/get).

A form that makes a secret (a new API key, a webhook signing secret) or reports a one-off
result (a webhook test) must still redirect after its post, or a reload repeats the
action. `keep(value)` holds the value in this process's memory for `KEEP_SECONDS`, tied to
the dashboard session that made it, and returns a random ticket for the redirect's URL;
`take(ticket)` on the GET it leads to hands the value over once and forgets it. The
ticket is not the secret: the secret never travels in a URL and is never written to disk.
A reload, another session, or a ticket older than a minute gets None, and the page says
the secret was already shown. The appliance serves from one process (waitress threads),
so memory is the right place; a restart forgets what was not yet shown. At most
`MAX_KEPT` values are held at once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from typing import Any

from flask import g

from appliance.services import clock

KEEP_SECONDS = 60
MAX_KEPT = 1000  # bound: past it, the oldest unshown value is dropped
TICKET_ARG = "shown"  # the query argument the redirect carries the ticket in

_kept: dict[str, tuple[str, dt.datetime, Any]] = {}
_lock = threading.Lock()


def _session_id() -> str:
    session = g.get("web_session")
    if session is None:  # every view that keeps something is behind login_required
        raise RuntimeError("reveal needs a signed-in dashboard session")
    return session.id


def keep(value: Any) -> str:
    """Hold `value` for this session for a minute; the ticket to `take` it with."""
    now = clock.now()
    ticket = secrets.token_urlsafe(16)
    with _lock:
        for stale in [t for t, (_, until, _v) in _kept.items() if until <= now]:
            del _kept[stale]
        while len(_kept) >= MAX_KEPT:
            del _kept[next(iter(_kept))]  # dicts keep insertion order: the oldest
        _kept[ticket] = (_session_id(), now + dt.timedelta(seconds=KEEP_SECONDS), value)
    return ticket


def take(ticket: str | None) -> Any | None:
    """The value kept under `ticket` by this session, once; None when it was already
    taken, has expired, or belongs to another session (which keeps it)."""
    if not ticket:
        return None
    session = g.get("web_session")
    with _lock:
        found = _kept.get(ticket)
        if found is None or session is None or found[0] != session.id:
            return None
        del _kept[ticket]
    return found[2] if found[1] > clock.now() else None


def forget_all() -> None:
    """Drop everything kept (tests; nothing else needs it)."""
    with _lock:
        _kept.clear()
