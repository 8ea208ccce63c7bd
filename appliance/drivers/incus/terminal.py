"""Interactive shells in Incus instances: an `exec` with a TTY over Incus's websockets.

`POST /1.0/instances/<name>/exec` with `interactive` and `wait-for-websocket` starts an
operation with two websockets, whose secrets it returns: fd "0" carries the TTY both
ways (binary frames), "control" takes JSON commands (`window-resize`, `signal`). The
command starts once both are connected; when it exits Incus closes them. The driver's
endpoint decides the socket: its unix socket, or TLS with the client certificate.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from appliance.drivers.base import DriverError, Terminal
from appliance.drivers.incus.api import quote_name
from appliance.drivers.incus.websocket import TEXT, WebSocket

# A login shell: bash where the image has one, else the POSIX sh.
LOGIN_SHELL = ["/bin/sh", "-c",
               "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]
SIGHUP = 1
OPERATION_CHECK_SECONDS = 1.0


class IncusTerminal(Terminal):
    """Incus keeps the TTY websocket open after the command exits (its own client closes
    it when the operation ends), so while the TTY is quiet the operation is looked at
    every OPERATION_CHECK_SECONDS: once it is over, the shell has ended."""

    def __init__(self, tty: WebSocket, control: WebSocket,
                 running: Callable[[], bool]) -> None:
        self._tty = tty
        self._control = control
        self._running = running
        self._checked = time.monotonic()

    def read(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            now = time.monotonic()
            wait = min(deadline - now, self._checked + OPERATION_CHECK_SECONDS - now)
            data = self._tty.receive(max(0.0, wait))
            if data is not None:
                return data
            now = time.monotonic()
            if now >= self._checked + OPERATION_CHECK_SECONDS:
                self._checked = now
                if not self._running():
                    self.close()
                    return b""
            if now >= deadline:
                return None

    def write(self, data: bytes) -> None:
        if data:
            self._tty.send(data)

    def resize(self, cols: int, rows: int) -> None:
        self._command({"command": "window-resize",
                       "args": {"width": str(cols), "height": str(rows)}})

    def _command(self, body: dict[str, Any]) -> None:
        self._control.send(json.dumps(body).encode(), TEXT)

    def close(self) -> None:
        if not self._control.closed:
            try:
                self._command({"command": "signal", "signal": SIGHUP})
            except DriverError:
                pass
        self._tty.close()
        self._control.close()


class IncusTerminals:
    """The Incus driver's `open_terminal` (mixed into IncusDriver)."""

    if TYPE_CHECKING:  # IncusDriver's, declared for the type checker
        _base: str
        _socket: str
        _timeout: float
        _params: dict[str, str]
        endpoint: str
        options: dict[str, str]

        def _send(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def open_terminal(self, ref: str, cols: int = 80, rows: int = 24) -> Terminal:
        body = self._send("POST", f"/1.0/instances/{quote_name(ref)}/exec", json={
            "command": LOGIN_SHELL, "interactive": True, "wait-for-websocket": True,
            "width": cols, "height": rows, "record-output": False,
            "environment": {"TERM": "xterm-256color", "HOME": "/root", "USER": "root",
                            "LANG": "C.UTF-8"}})
        operation = body.get("operation") or ""
        fds = ((body.get("metadata") or {}).get("metadata") or {}).get("fds") or {}
        if not operation or "0" not in fds or "control" not in fds:
            raise DriverError(f"Incus did not offer the exec websockets of {ref}")
        control = self._websocket(operation, fds["control"])
        try:
            tty = self._websocket(operation, fds["0"])
        except DriverError:
            control.close()
            raise
        return IncusTerminal(tty, control, lambda: self._operation_running(operation))

    def _operation_running(self, operation: str) -> bool:
        """Whether the exec's operation still runs (gone or unreachable: not)."""
        try:
            body = self._send("GET", operation, timeout=5)
        except DriverError:
            return False
        return (body.get("metadata") or {}).get("status") in ("Running", "Pending")

    def _websocket(self, operation: str, secret: str) -> WebSocket:
        query = urlencode({**self._params, "secret": secret})
        path = f"{operation}/websocket?{query}"
        if self._socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self._socket)
            except OSError as exc:
                sock.close()
                raise DriverError(f"cannot reach Incus at {self._socket}: {exc}") from exc
            return WebSocket.connect(sock, "incus", path, self._timeout)
        url = urlsplit(self._base)
        host, port = url.hostname or "", url.port or 8443
        context = ssl.create_default_context(cafile=self.options.get("server_cert") or None)
        if self.options.get("server_cert"):
            context.check_hostname = False  # the pinned certificate is what is checked
        cert, key = self.options.get("client_cert"), self.options.get("client_key")
        try:
            if cert:
                context.load_cert_chain(cert, key or None)
            raw = socket.create_connection((host, port), timeout=self._timeout)
            sock = context.wrap_socket(raw, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            raise DriverError(f"cannot reach Incus at {self.endpoint}: {exc}") from exc
        return WebSocket.connect(sock, url.netloc, path, self._timeout)
