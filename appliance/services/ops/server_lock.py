"""Which process serves a data directory: `appliance serve` holds an exclusive lock on
DATA_DIR/serve.lock (flock) for as long as it runs, with its pid written inside.

The lock is what `appliance restore` checks before it replaces a data directory, and on
SQLite what refuses a second `serve` of the same directory (two schedulers on one file);
on PostgreSQL several processes may share a data directory (its secrets), so a second one
is only logged. It dies with the process however the process ends (kill -9, power cut),
so a stale file never blocks anything.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

LOCK_NAME = "serve.lock"

log = logging.getLogger("appliance")

_held: list[int] = []  # descriptors of the locks this process holds (kept open)


def hold(data_dir: Path) -> bool:
    """Take the serving lock of `data_dir` for the rest of this process's life; False (and
    a warning) when another process holds it."""
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = _read_pid(fd)
        os.close(fd)
        log.info("another appliance serve (pid %s) uses the data directory %s too",
                 other or "?", data_dir)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.append(fd)
    return True


def holder(data_dir: Path) -> int | None:
    """The pid of the process serving `data_dir` (0 when it cannot be read), or None when
    no process holds the lock."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
