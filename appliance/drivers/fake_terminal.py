"""The simulated engine's terminal: a tiny echoing shell, for demos and the contract tests.

It behaves as a shell on a TTY does for the few things a test types: each key is echoed
(backspace rubs out), Enter runs the line - `echo WORDS` prints them (`$RANDOM` becomes a
number, as in bash; `$(stty size)` the TTY's rows and columns), `exit` ends the shell,
`hostname` prints the instance's name, anything else is "not found" - then a new prompt.
Ctrl-D on an empty line ends it too.
A stopped instance ends its shell (`FakeDriver.stop` calls `hang_up`).
"""

from __future__ import annotations

import itertools
import threading

from appliance.drivers.base import DriverError, Terminal

PROMPT = b"# "
_random = itertools.count(4242)


class FakeTerminal(Terminal):
    def __init__(self, hostname: str, cols: int, rows: int) -> None:
        self.hostname = hostname
        self.size = (cols, rows)
        self._changed = threading.Condition()
        self._output = bytearray(b"simulated shell on " + hostname.encode() + b"\r\n" + PROMPT)
        self._line = bytearray()
        self._ended = False

    def read(self, timeout: float) -> bytes | None:
        with self._changed:
            if not self._output and not self._ended:
                self._changed.wait(max(0.0, timeout))
            if self._output:
                data = bytes(self._output)
                self._output.clear()
                return data
            return b"" if self._ended else None

    def write(self, data: bytes) -> None:
        with self._changed:
            if self._ended:
                raise DriverError("the shell has ended", permanent=True)
            for byte in data:
                self._key(byte)
            self._changed.notify_all()

    def _key(self, byte: int) -> None:
        if self._ended:
            return
        if byte in (13, 10):
            self._output += b"\r\n"
            self._run(self._line.decode("utf-8", "replace").strip())
            self._line.clear()
        elif byte in (8, 127):
            if self._line:
                self._line.pop()
                self._output += b"\b \b"
        elif byte == 4 and not self._line:
            self._ended = True
        elif byte >= 32:
            self._line.append(byte)
            self._output.append(byte)

    def _run(self, line: str) -> None:
        command, _, rest = line.partition(" ")
        if command == "exit":
            self._output += b"logout\r\n"
            self._ended = True
            return
        if command == "echo":
            while "$RANDOM" in rest:
                rest = rest.replace("$RANDOM", str(next(_random)), 1)
            rest = rest.replace("$(stty size)", f"{self.size[1]} {self.size[0]}")
            self._output += rest.encode() + b"\r\n"
        elif command == "hostname":
            self._output += self.hostname.encode() + b"\r\n"
        elif command:
            self._output += b"sh: " + command.encode() + b": not found\r\n"
        self._output += PROMPT

    def resize(self, cols: int, rows: int) -> None:
        with self._changed:
            if self._ended:
                raise DriverError("the shell has ended", permanent=True)
            self.size = (cols, rows)

    def hang_up(self) -> None:
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def close(self) -> None:
        self.hang_up()
