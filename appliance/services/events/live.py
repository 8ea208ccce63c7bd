"""Live events: the caller's events as Server-Sent Events (GET /api/v1/events/stream).

Contract:

- A stream carries what `GET /events` shows the caller (their account's events and those
  of the live projects they belong to; a project-restricted key only that project's),
  under the same scope, `webhooks:read`. Membership is re-checked on every read, so a
  member removed from a project stops receiving its events.
- Each event is `id: <evt_...>`, `event: <type>`, `data: <the event as GET /events shows
  it, one line of JSON>`. Event ids sort in the order events were recorded, so a client
  that reconnects with `Last-Event-ID` gets exactly the events after that one; without
  it the stream starts with the next event recorded.
- A comment line (`: heartbeat`) every 15 s keeps proxies from timing out and lets the
  server notice a client that went away (the write fails).
- A stream ends after EVENT_STREAM_SECONDS (default 5 min); EventSource reconnects by
  itself with Last-Event-ID, so nothing is missed. This bounds how long one request holds
  a waitress thread - which is also why streams are capped: EVENT_STREAMS_PER_USER per
  user (a new stream past it ends the user's oldest one, which is told to wait a minute
  before reconnecting) and EVENT_STREAMS_MAX in total (default half of THREADS), beyond
  which opening a stream is 429 `too_many_streams` with Retry-After, leaving threads for
  ordinary requests.
- An administrator's stream also carries `event: notification.created` (no `id:` line,
  data `{"notification_id", "type", "event_id"}`) for the notifications made for them
  from events of projects they are not a member of - job.failed
  (notifications.ALSO_ADMINISTRATORS) - so the bell refreshes without the stream
  showing another account's event.
- Waking: `events.emit` pokes this module (a listener) and every waiting stream reads at
  once. The poke comes inside the event's transaction, before its commit, so a poked
  stream keeps reading every 0.1 s for 2 s; otherwise it reads every second, which also
  picks up events written by another process (the CLI, a second server).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Generator
from typing import Any, Protocol

from appliance import config
from appliance.db import database
from appliance.errors import InvalidRequest, RateLimited
from appliance.models import Event, Notification
from appliance.services import clock
from appliance.services.events import outbox, queries
from appliance.services.events.notifications import ALSO_ADMINISTRATORS
from appliance.services.principal import Principal

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 1.0
HURRY_SECONDS = 2.0
HURRY_POLL_SECONDS = 0.1
RETRY_MS = 3000  # what EventSource waits before reconnecting
REPLACED_RETRY_MS = 60_000  # ... after its stream was replaced by a newer one
BATCH = 100
EVENT_ID = re.compile(r"^evt_[0-9a-f]{1,40}$")

class _Wake:
    """What the waiting streams wait on: a count of pokes and until when to hurry."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.generation = 0
        self.hurry_until = 0.0
        self.ending = False  # the server is stopping: every stream ends


_wake = _Wake()


def on_event(event: Event) -> None:
    """The events listener (registered by services/wiring.py): an event was recorded;
    wake the streams (cheap, never touches the db)."""
    with _wake.changed:
        _wake.hurry_until = time.monotonic() + HURRY_SECONDS
    _poke_all()


def reset() -> None:
    """Forget every stream's slot and a past `end_all` (a new server in this process)."""
    with _slots._lock:
        _slots.by_user.clear()
    with _wake.changed:
        _wake.ending = False
        _wake.hurry_until = 0.0


def end_all() -> None:
    """The server is stopping: every open stream ends now (its client reconnects after
    `retry`), instead of holding its thread - and the shutdown - until its deadline."""
    with _wake.changed:
        _wake.ending = True
    _poke_all()


def _poke_all() -> None:
    with _wake.changed:
        _wake.generation += 1
        _wake.changed.notify_all()


class _Slots:
    """Open streams per user and in total (in this process: each holds one of its threads).

    A user at their cap gets the new stream anyway and their oldest one is ended (it is
    most likely a tab they navigated away from, whose going the server has not noticed
    yet): the page in front of them is the one that updates. Past the total cap a new
    stream is refused.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_user: dict[str, list[EventStream]] = {}

    @property
    def total(self) -> int:
        return sum(len(streams) for streams in self.by_user.values())

    def take(self, stream: EventStream, per_user: int, total: int) -> None:
        user_id = stream.principal.user.id
        with self._lock:
            mine = self.by_user.setdefault(user_id, [])
            live = [other for other in mine if not other.replaced]
            if len(live) >= per_user:
                live[0].replaced = True
            elif self.total >= total:
                if not mine:
                    del self.by_user[user_id]
                raise RateLimited(int(HEARTBEAT_SECONDS), "Too many live streams are open on this "
                                  "server; try again shortly.", code="too_many_streams",
                                  details={"limit": total, "scope": "server"})
            mine.append(stream)
        _poke_all()  # a replaced stream ends at once

    def give_back(self, stream: EventStream) -> None:
        user_id = stream.principal.user.id
        with self._lock:
            mine = self.by_user.get(user_id, [])
            if stream in mine:
                mine.remove(stream)
            if not mine:
                self.by_user.pop(user_id, None)


_slots = _Slots()


class SharedStream(Protocol):
    """Another kind of live stream that shares these slots (the instance log's)."""

    principal: Principal
    replaced: bool


def take_slot(stream: SharedStream) -> None:
    """Hold a slot for `stream` under the same caps (429 `too_many_streams` past the
    total; past the user's own cap their oldest stream is ended)."""
    per_user, total, _ = limits()
    _slots.take(stream, per_user, total)  # type: ignore[arg-type]


def give_back_slot(stream: SharedStream) -> None:
    _slots.give_back(stream)  # type: ignore[arg-type]


def pause(stream: SharedStream, seconds: float) -> str | None:
    """Wait up to `seconds`; "ending" when the server stops, "replaced" when the user
    opened a newer stream past their cap, else None."""
    deadline = time.monotonic() + seconds
    with _wake.changed:
        while not (stream.replaced or _wake.ending):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _wake.changed.wait(left)
    if _wake.ending:
        return "ending"
    return "replaced" if stream.replaced else None


def open_streams() -> int:
    """How many streams are open in this process (for tests and metrics)."""
    return _slots.total


def limits() -> tuple[int, int, float]:
    """(per user, total, lifetime in seconds) as configured."""
    settings = config.active()
    total = settings["EVENT_STREAMS_MAX"] or max(1, settings["THREADS"] // 2)
    return settings["EVENT_STREAMS_PER_USER"], total, float(settings["EVENT_STREAM_SECONDS"])


def event_payload(event: Event) -> dict[str, Any]:
    """The event as GET /events shows it."""
    return {"id": event.id, "type": event.type, "project_id": event.project_id,
            "user_id": event.user_id, "data": outbox.data_of(event),
            "created_at": clock.isoformat(event.created_at)}


def format_event(event: Event) -> str:
    data = json.dumps(event_payload(event), separators=(",", ":"), default=str)
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


def format_notice(notice: Notification) -> str:
    data = json.dumps({"notification_id": notice.id, "type": notice.type,
                       "event_id": notice.event_id}, separators=(",", ":"))
    return f"event: notification.created\ndata: {data}\n\n"


class EventStream:
    """An iterator of SSE text chunks holding one stream slot until it ends or is closed.

    `close()` (called by the WSGI server when the client goes away or the response ends)
    gives the slot back even if iteration never started.
    """

    def __init__(self, principal: Principal, after: str, lifetime: float,
                 client_gone: Callable[[], bool] | None = None) -> None:
        self.principal = principal
        self.client_gone = client_gone
        self.after = after
        self.after_notice = after  # the event of the last notification.created sent
        self.deadline = time.monotonic() + lifetime
        self._closed = False
        self.replaced = False  # set when the user opened a stream past their cap
        self._chunks = self._generate()

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> str:
        if self._closed:
            raise StopIteration
        try:
            return next(self._chunks)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._chunks.close()
            _slots.give_back(self)

    def _read(self) -> list[Event]:
        query = (Event.select().where(queries.visible_to(self.principal), Event.id > self.after)
                 .order_by(Event.id).limit(BATCH))
        return self._run(query)

    def _run(self, query: Any) -> list[Any]:
        if not database.is_closed():  # iterated where a connection is open (tests)
            return list(query)
        # The usual case: after the request's teardown, so the connection goes back to
        # the pool between reads instead of being held for the stream's life.
        with database.connection_context():
            return list(query)

    def _read_notices(self) -> list[Notification]:
        """An administrator's notifications of others' events (see the module's contract)."""
        user = self.principal.user
        if user.role != "admin" or self.principal.project_id is not None:
            return []
        return self._run(Notification.select(Notification.id, Notification.type,
                                             Notification.event)
                         .where(Notification.user == user.id,
                                Notification.type.in_(list(ALSO_ADMINISTRATORS)),
                                Notification.event > self.after_notice)
                         .order_by(Notification.event).limit(BATCH))

    def _generate(self) -> Generator[str, None, None]:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        last_beat = time.monotonic()
        while True:
            with _wake.changed:
                seen = _wake.generation
            rows = self._read()
            for row in rows:
                self.after = row.id
                yield format_event(row)
            for notice in self._read_notices():
                self.after_notice = notice.event_id
                yield format_notice(notice)
            if len(rows) == BATCH:
                continue  # more are waiting: no pause
            now = time.monotonic()
            if now >= self.deadline:
                yield ": this stream ends now; reconnect with Last-Event-ID\n\n"
                return
            if now - last_beat >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                last_beat = now
            step = HURRY_POLL_SECONDS if now < _wake.hurry_until else POLL_SECONDS
            timeout = min(step, self.deadline - now,
                          max(0.0, last_beat + HEARTBEAT_SECONDS - now))
            with _wake.changed:
                if _wake.generation == seen and not (self.replaced or _wake.ending):
                    _wake.changed.wait(timeout)
            if _wake.ending:
                yield ": the server is stopping; reconnect with Last-Event-ID\n\n"
                return
            if self.replaced:
                # The client reconnects after `retry`; a long one keeps an extra tab from
                # taking the stream back at once from the page the user looks at.
                yield f"retry: {REPLACED_RETRY_MS}\n: replaced by a newer stream of yours\n\n"
                return
            if self.client_gone is not None and self.client_gone():
                return


def check_last_event_id(value: str | None) -> str | None:
    """An `evt_` id, None for none; 400 naming `Last-Event-ID` for anything else."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not EVENT_ID.match(value):
        raise InvalidRequest("Last-Event-ID must be the id of an event (evt_...).",
                             field="Last-Event-ID")
    return value


def latest_event_id() -> str:
    """The newest event's id ("" when there is none): a new stream starts after it."""
    row = Event.select(Event.id).order_by(Event.id.desc()).limit(1).first()
    return row.id if row is not None else ""


def open_stream(principal: Principal, last_event_id: str | None = None,
                client_gone: Callable[[], bool] | None = None) -> EventStream:
    """Start a live stream for the caller, after `last_event_id` or from now.

    `client_gone()`, when given, says the client has left (the WSGI server's
    `waitress.client_disconnected`): the stream then ends within a second.

    403 `scope_denied` for a key without `webhooks:read`; 400 for a malformed
    Last-Event-ID; 429 `too_many_streams` (with Retry-After) past the total cap; past
    the user's own cap their oldest stream is ended instead.
    """
    principal.require_scope("webhooks:read")
    after = check_last_event_id(last_event_id)
    per_user, total, lifetime = limits()
    if after is None:
        after = latest_event_id()
    stream = EventStream(principal, after, lifetime, client_gone)
    _slots.take(stream, per_user, total)
    return stream
