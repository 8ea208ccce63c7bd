"""A minimal websocket client (RFC 6455) for Incus's exec streams, over a connected socket.

Only what an interactive exec needs: the opening handshake, masked frames out, frames in
(text, binary, continuation, ping answered with pong, close), and reads with a timeout.
No extensions, no subprotocols. The socket is a unix socket or a TLS one, made by the
driver, so the same code serves both endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import os
import select
import socket
import ssl
import struct
import threading

from appliance.drivers.base import DriverError

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_HEADERS_MAX = 16384


class WebSocket:
    """One client websocket. `send` is safe from several threads; `receive` is for one
    reader at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self.closed = False

    @classmethod
    def connect(cls, sock: socket.socket, host: str, path: str, timeout: float) -> WebSocket:
        """Do the opening handshake for `path` on `sock`; DriverError when refused."""
        key = base64.b64encode(os.urandom(16))
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        sock.settimeout(timeout)
        try:
            sock.sendall(request)
            head = bytearray()
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(4096)
                if not chunk or len(head) > _HEADERS_MAX:
                    raise DriverError(f"the engine closed the websocket {path} at its start")
                head += chunk
        except OSError as exc:
            sock.close()
            raise DriverError(f"opening the websocket {path} failed: {exc}") from exc
        header, _, rest = bytes(head).partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        digest = hashlib.sha1(key + _GUID).digest()  # noqa: S324 - RFC 6455's accept
        expected = base64.b64encode(digest).decode()
        fields = {name.strip().lower(): value.strip() for name, _, value in
                  (line.partition(":") for line in lines[1:])}
        if " 101 " not in lines[0] + " " or fields.get("sec-websocket-accept") != expected:
            sock.close()
            raise DriverError(f"the engine refused the websocket {path}: {lines[0]}",
                              permanent=True)
        sock.settimeout(None)
        ws = cls(sock)
        ws._buffer += rest
        return ws

    def send(self, data: bytes, opcode: int = BINARY) -> None:
        mask = os.urandom(4)
        size = len(data)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        masked = _mask_long(data, mask)
        with self._send_lock:
            if self.closed:
                raise DriverError("the websocket is closed", permanent=True)
            try:
                self.sock.sendall(head + mask + masked)
            except OSError as exc:
                raise DriverError(f"writing to the engine failed: {exc}", permanent=True) from exc

    def _pending(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0

    def _fill(self, timeout: float) -> bool:
        """Read more into the buffer; False when nothing came within `timeout`."""
        if not self._pending():
            try:
                ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            except (OSError, ValueError):  # closed by another thread meanwhile
                raise EOFError from None
            if not ready:
                return False
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, ssl.SSLWantReadError):
            return False
        except OSError:
            chunk = b""
        if not chunk:
            raise EOFError
        self._buffer += chunk
        return True

    def _frame(self) -> tuple[int, bytes] | None:
        """One whole frame from the buffer, or None when it has not all arrived."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        opcode, length, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, at = struct.unpack("!H", buf[2:4])[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, at = struct.unpack("!Q", buf[2:10])[0], 10
        mask = b""
        if buf[1] & 0x80:  # servers do not mask, but a frame that is masked is still read
            mask, at = bytes(buf[at:at + 4]), at + 4
        if len(buf) < at + length:
            return None
        payload = bytes(buf[at:at + length])
        del buf[:at + length]
        if mask:
            payload = _mask_long(payload, mask)
        return opcode, payload

    def receive(self, timeout: float) -> bytes | None:
        """The next data frame's payload: None when none came within `timeout`, b"" when
        the websocket is closed (by either side) or an empty data frame came, which is
        how Incus says a stream ended. Pings are answered on the way."""
        while True:
            frame = self._frame()
            if frame is None:
                if self.closed:
                    return b""
                try:
                    if not self._fill(timeout):
                        return None
                except EOFError:
                    self.close(send=False)
                    return b""
                timeout = 0.05  # the rest of a frame that began to arrive
                continue
            opcode, payload = frame
            if opcode == CLOSE:
                self.close()
                return b""
            if opcode == PING:
                try:
                    self.send(payload, PONG)
                except DriverError:
                    pass
                continue
            if opcode == PONG:
                continue
            if not payload:  # Incus's end of a stream: an empty data message
                self.close()
                return b""
            return payload

    def close(self, send: bool = True) -> None:
        with self._send_lock:
            if self.closed:
                return
            if send:
                try:
                    mask = os.urandom(4)
                    self.sock.sendall(struct.pack("!BB", 0x80 | CLOSE, 0x80) + mask)
                except OSError:
                    pass
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _mask_long(data: bytes, mask: bytes) -> bytes:
    """XOR `data` with the repeated 4-byte mask, fast for long payloads."""
    count = len(data)
    if not count:
        return b""
    key = int.from_bytes((mask * (count // 4 + 1))[:count], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(count, "big")
