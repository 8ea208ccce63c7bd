"""Web consoles: short-lived interactive shells in running instances, relayed by this process.

Contract:

- `open_console` (POST .../console) needs `instances:write` and the operate role, a
  running instance and an engine with the `terminal` capability (else 409 `unsupported`
  or `invalid_state`). It starts the engine's login shell with a TTY at once and returns
  the session; the engine's API is never exposed to the client.
- A session belongs to who opened it, through the same sign-in: the dashboard session,
  the access token's session or the API key. Anyone else (another tab's sign-in, another
  user) gets 404 `console_not_found`, as for a session that never existed.
- Output: `stream` yields Server-Sent Events: `event: output` with `{"data": <base64 of
  the bytes>}` and, last, `event: end` with `{"reason", "message"}`. Bytes are relayed as
  they are, never decoded. One stream reads a session at a time; a newer one takes over
  and the older ends with reason `replaced`. Between streams the engine holds the output.
- Input and resize are POSTs (`send_input`, `resize`): bytes in base64, at most
  INPUT_MAX per request.
- A session ends when the shell exits (reason `exited`, or `instance_stopped` when the
  instance is no longer running), after CONSOLE_IDLE_TIMEOUT_SECONDS without input
  (`idle`), when closed (`closed`, DELETE or the page going away), when no stream has
  read it for DETACHED_SECONDS (`abandoned`) or when the server stops (`server_stopping`).
  Its end closes the engine's shell. Opening and closing are audited
  (`console.opened`, `console.closed` with the reason and duration).
- Caps (sessions live in this process; each attached stream holds a server thread, and
  `serve` adds CONSOLE_SESSIONS_MAX worker threads for them): CONSOLE_SESSIONS_PER_USER
  per user and CONSOLE_SESSIONS_MAX in total; past either, 429 `too_many_consoles` with
  Retry-After.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from appliance import config
from appliance.db import database
from appliance.drivers.base import Terminal
from appliance.errors import Conflict, DriverError, Gone, InvalidRequest, NotFound, RateLimited
from appliance.models import Instance
from appliance.services import audit, clock, projects
from appliance.services.instances import lifecycle, nodes
from appliance.services.principal import Principal

log = logging.getLogger("appliance")

INPUT_MAX = 65536  # bytes of input per request
OUTPUT_CHUNK = 65536  # bytes of output per event at most
HEARTBEAT_SECONDS = 15.0
READ_SECONDS = 0.5  # how long one read waits (the stream's checks run between reads)
DETACHED_SECONDS = 60.0  # a session no stream reads for this long is abandoned
SWEEP_SECONDS = 5.0
RETRY_MS = 1000

MESSAGES = {
    "exited": "The shell exited; the console session has ended.",
    "instance_stopped": "The instance stopped; the console session has ended.",
    "idle": "The console was idle for too long and was closed.",
    "closed": "The console session was closed.",
    "abandoned": "The console session was closed: nothing was reading it.",
    "replaced": "This console was opened in another window.",
    "server_stopping": "The server is restarting; the console session has ended.",
    "engine_error": "The connection to the instance's engine was lost.",
}


@dataclass(eq=False)
class ConsoleSession:
    id: str
    user_id: str
    session_id: str | None
    key_id: str | None
    project_id: str
    instance_id: str
    ref: str
    node_id: str
    ip: str
    terminal: Terminal
    opened_at: float = field(default_factory=time.monotonic)
    opened_clock: dt.datetime | None = None
    last_input: float = field(default_factory=time.monotonic)
    detached_since: float | None = field(default_factory=time.monotonic)
    reader: object = None  # the stream reading it now
    reason: str | None = None  # set once it has ended
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def open(self) -> bool:
        return self.reason is None

    def idle_deadline(self) -> float:
        return self.last_input + idle_timeout()

    def expires_at(self) -> dt.datetime:
        """When it ends unless input comes first."""
        left = max(0.0, self.idle_deadline() - time.monotonic())
        return clock.now() + dt.timedelta(seconds=int(left))


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sessions: dict[str, ConsoleSession] = {}
        self.reserved: dict[str, int] = {}  # user id -> sessions being opened
        self.sweeper: threading.Thread | None = None
        self.ending = False

    def count(self, user_id: str | None = None) -> int:
        if user_id is None:
            return len(self.sessions) + sum(self.reserved.values())
        return (sum(1 for s in self.sessions.values() if s.user_id == user_id)
                + self.reserved.get(user_id, 0))


_registry = _Registry()


def idle_timeout() -> float:
    return float(config.active()["CONSOLE_IDLE_TIMEOUT_SECONDS"])


def open_count() -> int:
    """Sessions open in this process (tests and metrics)."""
    with _registry.lock:
        return len(_registry.sessions)


def supported(instance: Instance) -> bool:
    """Whether the instance's engine can open consoles (what the dashboard offers)."""
    try:
        return nodes.driver_for(instance.node).capabilities().terminal
    except DriverError:
        return False


def _reserve(user_id: str) -> None:
    settings = config.active()
    per_user, total = settings["CONSOLE_SESSIONS_PER_USER"], settings["CONSOLE_SESSIONS_MAX"]
    with _registry.lock:
        if _registry.count(user_id) >= per_user:
            raise RateLimited(30, f"You have {per_user} consoles open; close one first.",
                              code="too_many_consoles",
                              details={"limit": per_user, "scope": "user"})
        if _registry.count() >= total:
            raise RateLimited(30, "Too many consoles are open on this server; try again "
                              "shortly.", code="too_many_consoles",
                              details={"limit": total, "scope": "server"})
        _registry.reserved[user_id] = _registry.reserved.get(user_id, 0) + 1


def _unreserve(user_id: str) -> None:
    with _registry.lock:
        left = _registry.reserved.get(user_id, 0) - 1
        if left > 0:
            _registry.reserved[user_id] = left
        else:
            _registry.reserved.pop(user_id, None)


def _in_db(write: Callable[[], object]) -> None:
    """Run `write` in a transaction, with a connection of its own when the request's
    is gone (a stream ends after its request's teardown)."""
    if not database.is_closed():
        with database.atomic():
            write()
        return
    with database.connection_context(), database.atomic():
        write()


def open_console(principal: Principal, project_id: str, instance_id: str,
                 cols: int = 80, rows: int = 24) -> ConsoleSession:
    """Start a shell in the instance for the caller; see the module's contract."""
    instance = lifecycle.changeable(principal, project_id, instance_id, allowed=("running",),
                                    action="open a console on", scope="instances:write")
    driver = nodes.driver_for(instance.node)
    driver.capabilities().require("terminal")
    if not instance.driver_ref:
        raise Conflict("The instance has no engine object yet.",
                                 code="invalid_state", details={"status": instance.status})
    _sweep()
    _reserve(principal.user.id)
    try:
        terminal = nodes.engine_call(lambda: driver.open_terminal(instance.driver_ref,
                                                                  cols, rows))
    except BaseException:
        _unreserve(principal.user.id)
        raise
    session = ConsoleSession(
        id="con_" + secrets.token_hex(16), user_id=principal.user.id,
        session_id=principal.session_id, key_id=principal.key_id, project_id=project_id,
        instance_id=instance.id, ref=instance.driver_ref, node_id=instance.node_id,
        ip=principal.ip, terminal=terminal, opened_clock=clock.now())
    with _registry.lock:
        _unreserve_locked(principal.user.id)
        _registry.sessions[session.id] = session
    _start_sweeper()
    try:
        _in_db(lambda: _audit_open(principal, instance, session, cols, rows))
    except BaseException:
        _finish(session, "closed", audited=False)
        raise
    return session


def _unreserve_locked(user_id: str) -> None:
    left = _registry.reserved.get(user_id, 0) - 1
    if left > 0:
        _registry.reserved[user_id] = left
    else:
        _registry.reserved.pop(user_id, None)


def _audit_open(principal: Principal, instance: Instance, session: ConsoleSession,
                cols: int, rows: int) -> None:
    details: dict[str, Any] = {"console_id": session.id, "cols": cols, "rows": rows,
                                  "via": principal.via}
    if principal.operator:
        details["as_operator"] = True
    audit.record("console.opened", actor=principal.user, target_type="instance",
                 target_id=instance.id, ip=principal.ip, **details)


def get(principal: Principal, project_id: str, instance_id: str,
        console_id: str) -> ConsoleSession:
    """The caller's open session; 404 `console_not_found` for anyone else's or none;
    410 `console_closed` for one of theirs that has ended (while it is remembered).
    Scope and role come first, like every project route: an outsider gets 404
    `project_not_found`, a viewer 403, whatever the session id."""
    principal.require_scope("instances:write")
    projects.access(principal, project_id, projects.OPERATE)
    with _registry.lock:
        session = _registry.sessions.get(console_id) or _ended.get(console_id)
    if (session is None or session.user_id != principal.user.id
            or session.session_id != principal.session_id
            or session.key_id != principal.key_id
            or session.project_id != project_id or session.instance_id != instance_id):
        raise NotFound("No such console session.", code="console_not_found")
    if not session.open:
        raise Gone(MESSAGES.get(session.reason or "closed", "The console session ended."),
                   code="console_closed", details={"reason": session.reason})
    return session


# Ended sessions are remembered for a while, so their owner gets 410 rather than 404.
_ended: dict[str, ConsoleSession] = {}
_ENDED_KEEP = 200


def send_input(principal: Principal, project_id: str, instance_id: str, console_id: str,
               *, data: str) -> None:
    """Write the base64 `data` to the shell; 400 naming `data` when it is not base64."""
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidRequest("data is the input's bytes in base64.", field="data") from None
    if len(raw) > INPUT_MAX:
        raise InvalidRequest(f"data holds at most {INPUT_MAX} bytes.", field="data")
    session = get(principal, project_id, instance_id, console_id)
    session.last_input = time.monotonic()
    try:
        session.terminal.write(raw)
    except DriverError:
        _finish(session, _ending_reason(session))
        raise Gone(MESSAGES[session.reason or "exited"], code="console_closed",
                   details={"reason": session.reason}) from None


def resize(principal: Principal, project_id: str, instance_id: str, console_id: str,
           *, cols: int, rows: int) -> None:
    session = get(principal, project_id, instance_id, console_id)
    try:
        session.terminal.resize(cols, rows)
    except DriverError:
        _finish(session, _ending_reason(session))
        raise Gone(MESSAGES[session.reason or "exited"], code="console_closed",
                   details={"reason": session.reason}) from None


def close(principal: Principal, project_id: str, instance_id: str, console_id: str) -> None:
    """End the caller's session (no-op when it has ended already)."""
    try:
        session = get(principal, project_id, instance_id, console_id)
    except Gone:
        return
    _finish(session, "closed")


# Jobs that take the shell's instance down: a shell ending while one runs ended with it.
_STOPPING_JOBS = ("instance.stop", "instance.shutdown", "instance.reboot", "instance.reset",
                  "instance.rebuild", "instance.delete", "backup.restore")


def _ending_reason(session: ConsoleSession) -> str:
    """Why a shell ended by itself: the instance stopped (or is being stopped, rebooted,
    rebuilt or deleted: the shell can end a moment before the engine says so), or the
    shell exited."""
    try:
        with database.connection_context():
            instance = Instance.get_or_none(Instance.id == session.instance_id)
            node = instance.node if instance is not None else None
            job = (lifecycle.current_jobs([instance.id]).get(instance.id)
                   if instance is not None else None)
        if instance is None or node is None or instance.status != "running":
            return "instance_stopped"
        if job is not None and job.type in _STOPPING_JOBS:
            return "instance_stopped"
        power = nodes.driver_for(node).state(session.ref).power
    except Exception:  # the engine is gone too: the shell certainly is
        return "exited"
    return "exited" if power == "running" else "instance_stopped"


def _finish(session: ConsoleSession, reason: str, audited: bool = True) -> None:
    """End a session once: close the shell, free the slot, audit it."""
    with session.lock:
        if session.reason is not None:
            return
        session.reason = reason
    with _registry.lock:
        _registry.sessions.pop(session.id, None)
        _ended[session.id] = session
        while len(_ended) > _ENDED_KEEP:
            _ended.pop(next(iter(_ended)))
    try:
        session.terminal.close()
    except DriverError:
        pass
    if audited:
        seconds = round(time.monotonic() - session.opened_at)
        _in_db(lambda: audit.record(
            "console.closed", actor=session.user_id, target_type="instance",
            target_id=session.instance_id, ip=session.ip, console_id=session.id,
            reason=reason, seconds=seconds))


def _sweep() -> None:
    """End the sessions that went idle or that nothing has read for DETACHED_SECONDS."""
    now = time.monotonic()
    with _registry.lock:
        sessions = list(_registry.sessions.values())
    for session in sessions:
        if now >= session.idle_deadline():
            _finish(session, "idle")
        elif (session.detached_since is not None
              and now - session.detached_since >= DETACHED_SECONDS):
            _finish(session, "abandoned")


def _start_sweeper() -> None:
    with _registry.lock:
        if _registry.sweeper is not None and _registry.sweeper.is_alive():
            return
        _registry.sweeper = threading.Thread(target=_sweep_forever, name="console-sweeper",
                                             daemon=True)
        _registry.sweeper.start()


def _sweep_forever() -> None:
    while True:
        time.sleep(SWEEP_SECONDS)
        with _registry.lock:
            if not _registry.sessions:
                _registry.sweeper = None
                return
        try:
            _sweep()
        except Exception:  # a failed audit write must not stop the sweeps
            log.exception("sweeping the web consoles failed")


def end_all() -> None:
    """The server is stopping: every session ends (streams say so and return)."""
    _registry.ending = True
    with _registry.lock:
        sessions = list(_registry.sessions.values())
    for session in sessions:
        try:
            _finish(session, "server_stopping")
        except Exception:  # the database may be gone already
            log.warning("console %s: its end was not audited", session.id)


def reset() -> None:
    """Tests: forget every session (closing their shells) and a past `end_all`."""
    with _registry.lock:
        sessions = list(_registry.sessions.values())
        _registry.sessions.clear()
        _registry.reserved.clear()
        _ended.clear()
    for session in sessions:
        try:
            session.terminal.close()
        except DriverError:
            pass
    _registry.ending = False


def _event(kind: str, body: dict) -> str:
    return f"event: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


class ConsoleStream:
    """An iterator of SSE chunks reading one session's output; `close()` (the WSGI
    server's, when the client goes or the response ends) detaches it, keeping the
    session for a reconnect until DETACHED_SECONDS."""

    def __init__(self, session: ConsoleSession, client_gone: Callable[[], bool] | None):
        self.session = session
        self.client_gone = client_gone
        self._closed = False
        with session.lock:
            session.reader = self
            session.detached_since = None
        self._chunks = self._generate()

    def __iter__(self) -> ConsoleStream:
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
        if self._closed:
            return
        self._closed = True
        self._chunks.close()
        with self.session.lock:
            if self.session.reader is self:
                self.session.reader = None
                self.session.detached_since = time.monotonic()

    def _end(self, reason: str) -> str:
        return f"retry: 86400000\n{_event('end', {'reason': reason, 'message': MESSAGES[reason]})}"

    def _generate(self) -> Generator[str, None, None]:
        session = self.session
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        last_beat = time.monotonic()
        while True:
            if session.reader is not self:
                yield self._end("replaced")
                return
            if not session.open:
                yield self._end(session.reason or "closed")
                return
            if time.monotonic() >= session.idle_deadline():
                _finish(session, "idle")
                continue
            try:
                data = session.terminal.read(READ_SECONDS)
            except DriverError:
                data = b""
            if data == b"":
                if session.open:
                    _finish(session, _ending_reason(session))
                continue
            if data:
                chunk = bytearray(data)
                while len(chunk) < OUTPUT_CHUNK:
                    more = session.terminal.read(0)
                    if not more:
                        break
                    chunk += more
                yield _event("output", {"data": base64.b64encode(bytes(chunk)).decode()})
                last_beat = time.monotonic()
                continue
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                last_beat = now
            if self.client_gone is not None and self.client_gone():
                return


def stream(principal: Principal, project_id: str, instance_id: str, console_id: str,
           client_gone: Callable[[], bool] | None = None) -> ConsoleStream:
    """The session's output as SSE; a stream already reading it ends (`replaced`)."""
    return ConsoleStream(get(principal, project_id, instance_id, console_id), client_gone)
