"""Interactive shells in Docker containers: an exec with a TTY on the hijacked attach stream.

`exec_create(tty=True, stdin=True)` then `exec_start(socket=True)`: Docker upgrades the
HTTP connection to a raw two-way stream, unframed with a TTY (no 8-byte multiplexing
headers). The size is set with `exec_resize`. When the shell exits Docker closes the
stream. Docker leaves an exec running when its client goes away, so the shell first
writes its pid (which `exec` keeps) to a file named for the session, and `close` sends
that pid SIGHUP (as a terminal's hang-up does) with a second exec, then removes the file.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from typing import Any

from appliance.drivers.base import DriverError, Terminal

PID_FILE = "/tmp/.appliance-console-{token}"  # noqa: S108 - inside the container, a random name


def login_shell(token: str) -> list[str]:
    """A login shell (bash where the image has one, else the POSIX sh) that leaves its
    pid in PID_FILE first."""
    return ["/bin/sh", "-c", f'echo "$$" > {PID_FILE.format(token=token)} 2>/dev/null; '
            "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"]


class DockerTerminal(Terminal):
    def __init__(self, api: Any, container_id: str, exec_id: str, token: str, *,
                 stream: Any, errors: Any) -> None:
        self._api = api
        self._container_id = container_id
        self._token = token
        self._exec_id = exec_id
        self._stream = stream
        # unix: a SocketIO around the socket (the SDK's union type has no common API)
        self._sock: socket.socket = getattr(stream, "_sock", stream)
        self._errors = errors
        self._lock = threading.Lock()
        self._ended = False

    def read(self, timeout: float) -> bytes | None:
        if self._ended:
            return b""
        try:
            pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending() > 0
            if not pending:
                ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout))
                if not ready:
                    return None
            self._sock.setblocking(False)
            data = self._sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except (OSError, ValueError):
            data = b""
        if not data:
            self.close()
        return data

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._ended:
                raise DriverError("the shell has ended", permanent=True)
            try:
                self._sock.setblocking(True)
                self._sock.settimeout(10)
                self._sock.sendall(data)
            except OSError as exc:
                raise DriverError(f"writing to the shell failed: {exc}",
                                  permanent=True) from exc

    def resize(self, cols: int, rows: int) -> None:
        if self._ended:
            raise DriverError("the shell has ended", permanent=True)
        with self._errors("resizing the console"):
            self._api.exec_resize(self._exec_id, height=rows, width=cols)

    def close(self) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        for thing in (self._stream, self._sock):
            try:
                thing.close()
            except OSError:
                pass
        try:
            self._hang_up()
        except DriverError:
            pass  # the container is gone or stopped: so is the shell

    def _hang_up(self) -> None:
        with self._errors("ending the console's shell"):
            if not self._api.exec_inspect(self._exec_id).get("Running"):
                return
            path = PID_FILE.format(token=self._token)
            killer = self._api.exec_create(self._container_id, [
                "/bin/sh", "-c", f'kill -HUP "$(cat {path})"; rm -f {path}'])
            self._api.exec_start(killer["Id"])
