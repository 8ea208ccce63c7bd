"""Webhook receivers for tests: real HTTP servers on 127.0.0.1, and the SSRF seam that
lets the appliance reach them (production refuses loopback, always)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook as StandardWebhook

from appliance.services.webhooks import ssrf


def allow_loopback(monkeypatch) -> None:
    """Let the SSRF guard pass 127.0.0.1 (where the receivers listen) and nothing else
    it would refuse: the rest of the check stays the production one."""
    strict = ssrf._refusal

    def refusal(address, allow_private):
        if str(address) == "127.0.0.1":
            return None
        return strict(address, allow_private)

    monkeypatch.setattr(ssrf, "_refusal", refusal)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]

    def signatures(self) -> list[str]:
        return self.headers["webhook-signature"].split(" ")


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0


class Receiver:
    """Records every POST; answers with the queued answers, then with `default`."""

    def __init__(self, default: Answer | None = None, port: int = 0) -> None:
        self.received: list[Received] = []
        self.answers: list[Answer] = []
        self.default = default or Answer()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.received.append(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                        time.monotonic()))
                    answer = receiver.answers.pop(0) if receiver.answers else receiver.default
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the appliance gave up waiting

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify_now(secret: str, request: Received):
    """The standardwebhooks package's own check (timestamp within 5 minutes of now)."""
    return StandardWebhook(secret).verify(request.body, request.headers)


def signed_by(secret: str, request: Received) -> bool:
    """Whether one of the request's signatures is `secret`'s, computed by the
    standardwebhooks package at the request's own timestamp (for tests that move the
    appliance's clock away from the real one)."""
    timestamp = dt.datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), dt.UTC)
    expected = StandardWebhook(secret).sign(request.msg_id, timestamp, request.body.decode())
    return expected in request.signatures()
