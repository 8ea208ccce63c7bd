"""The instance's console log, live: GET .../logs/stream as Server-Sent Events.

Each event is `event: logs` with `data: {"data": <text>, "reset": <bool>}` (the Rustploy
seed's shape): the first event of a stream is the last `lines` lines with `reset: true`
(a client replaces what it shows), later ones carry only what was added (`reset: false`,
appended). When the log no longer continues what was sent (the engine's buffer wrapped,
the instance was rebuilt) the whole tail is sent again with `reset: true`. The log is
read from the engine every POLL_SECONDS while the stream is open.

A stream holds a server thread, so it shares the live event streams' slots and caps
(EVENT_STREAMS_PER_USER, EVENT_STREAMS_MAX: 429 `too_many_streams`) and lifetime
(EVENT_STREAM_SECONDS, after which EventSource reconnects and gets a fresh snapshot).
Same rights as the plain text endpoint: `instances:read`, any member.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator

from appliance.db import database
from appliance.errors import ApplianceError
from appliance.services.events import live
from appliance.services.instances import lifecycle
from appliance.services.principal import Principal

POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0
RETRY_MS = 3000


def logs_event(data: str, reset: bool) -> str:
    body = json.dumps({"data": data, "reset": reset}, separators=(",", ":"))
    return f"event: logs\ndata: {body}\n\n"


class LogStream:
    def __init__(self, principal: Principal, read: Callable[[], str], lifetime: float,
                 client_gone: Callable[[], bool] | None) -> None:
        self.principal = principal
        self.replaced = False
        self._read = read
        self._deadline = time.monotonic() + lifetime
        self._client_gone = client_gone
        self._closed = False
        self._chunks = self._generate()

    def __iter__(self) -> LogStream:
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
            live.give_back_slot(self)

    def _text(self) -> str | None:
        try:
            if not database.is_closed():
                return self._read()
            with database.connection_context():
                return self._read()
        except ApplianceError:  # the engine did not answer this time: try again later
            return None

    def _generate(self) -> Generator[str, None, None]:
        yield f"retry: {RETRY_MS}\n: connected\n\n"
        sent: str | None = None
        last_beat = time.monotonic()
        while True:
            text = self._text()
            if text is not None and text != sent:
                if sent is not None and text.startswith(sent):
                    yield logs_event(text[len(sent):], False)
                else:
                    yield logs_event(text, True)
                sent = text
                last_beat = time.monotonic()
            now = time.monotonic()
            if now >= self._deadline:
                yield ": this stream ends now; reconnect for a fresh snapshot\n\n"
                return
            if now - last_beat >= HEARTBEAT_SECONDS:
                yield ": heartbeat\n\n"
                last_beat = now
            why = live.pause(self, min(POLL_SECONDS, self._deadline - now))
            if why == "ending":
                yield ": the server is stopping\n\n"
                return
            if why == "replaced":
                yield f"retry: {live.REPLACED_RETRY_MS}\n: replaced by a newer stream of yours\n\n"
                return
            if self._client_gone is not None and self._client_gone():
                return


def open_log_stream(principal: Principal, project_id: str, instance_id: str, lines: int,
                    client_gone: Callable[[], bool] | None = None) -> LogStream:
    """Follow the instance's console log; errors as `lifecycle.console_log` (403, 404,
    409 unsupported) are raised before the stream starts, and 429 past the caps."""
    lifecycle.console_log(principal, project_id, instance_id, 1)  # rights and capability

    def read() -> str:
        return lifecycle.console_log(principal, project_id, instance_id, lines)

    stream = LogStream(principal, read, live.limits()[2], client_gone)
    live.take_slot(stream)
    return stream
