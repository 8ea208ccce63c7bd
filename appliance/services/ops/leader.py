"""Which process runs the periodic tasks: the holder of the `periodic` lease.

With several `appliance serve` processes on one PostgreSQL database, exactly one of them
runs metering, invoices, retention, node checks and the other periodic tasks at a time
(scheduler.py asks `is_leader()` before each). The lease is a row (`scheduler_lease`)
that a process takes with one conditional UPDATE when it is free or expired, and renews
every third of LEADER_LEASE_SECONDS while it runs; a process that dies (`kill -9`, a
lost machine) stops renewing, and another takes the lease within LEADER_LEASE_SECONDS
plus a third of it. A row works the same on SQLite (one process, always the leader) and
PostgreSQL, needs no session-bound advisory lock, and shows in the database who leads.

The tasks themselves stay idempotent (conditional UPDATEs, unique keys), so the short
overlap a paused-then-resumed leader could cause does no harm.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid

from peewee import IntegrityError

from appliance.db import database
from appliance.models import SchedulerLease
from appliance.services import clock

NAME = "periodic"
IDENTITY = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

_state = {"leading": False}  # whether this process held the lease at its last renewal


def renew(seconds: int, identity: str = IDENTITY, sole: bool = False) -> bool:
    """Take or renew the lease for `seconds`; whether this process holds it now.

    `sole`: this process is known to be the only one (SQLite, whose data directory lock
    refuses a second `serve`), so a lease left by a killed predecessor is taken at once
    instead of after it runs out.
    """
    now = clock.now()
    until = now + dt.timedelta(seconds=seconds)
    with database.atomic():
        mine = SchedulerLease.holder == identity
        if sole:
            mine = SchedulerLease.name == NAME
        taken = (SchedulerLease.update(holder=identity, expires_at=until)
                 .where(SchedulerLease.name == NAME, mine)
                 .execute())
        if not taken:
            taken = (SchedulerLease.update(holder=identity, expires_at=until, acquired_at=now)
                     .where(SchedulerLease.name == NAME, SchedulerLease.expires_at < now)
                     .execute())
    if not taken and not SchedulerLease.select().where(SchedulerLease.name == NAME).exists():
        try:
            with database.atomic():
                SchedulerLease.create(name=NAME, holder=identity, expires_at=until,
                                      acquired_at=now)
            taken = 1
        except IntegrityError:  # another process made it first
            taken = 0
    _state["leading"] = bool(taken)
    return _state["leading"]


def release(identity: str = IDENTITY) -> None:
    """Give the lease up (a clean stop), so another process takes it at once."""
    _state["leading"] = False
    with database.atomic():
        (SchedulerLease.update(expires_at=clock.now() - dt.timedelta(seconds=1))
         .where(SchedulerLease.name == NAME, SchedulerLease.holder == identity).execute())


def is_leader() -> bool:
    """Whether this process held the lease at its last renewal."""
    return _state["leading"]


def holder() -> dict | None:
    """Who holds the lease, and until when (None before any process took it)."""
    row = SchedulerLease.get_or_none(SchedulerLease.name == NAME)
    if row is None:
        return None
    return {"holder": row.holder, "expires_at": clock.isoformat(row.expires_at),
            "acquired_at": clock.isoformat(row.acquired_at),
            "live": row.expires_at >= clock.now()}


def reset() -> None:
    """Tests: forget the leadership this process had."""
    _state["leading"] = False
