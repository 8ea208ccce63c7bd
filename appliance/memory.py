"""Keep the serving process's resident set from ratcheting up: glibc malloc settings.

Two things made a fresh server grow by tens of MB after a few sign-ins, and never shrink:

- argon2 allocates its 19 MiB work area with malloc and frees it after each hash. glibc
  serves a large block with mmap and returns it on free, but raises its mmap threshold to
  the size of every such block freed (up to 32 MiB): from the second hash on, the area
  came from the heap of the worker thread's arena, which keeps it resident.
- each of the eight worker threads got an arena of its own (glibc makes up to eight per
  core), and every arena keeps what it once held.

`tune_malloc` fixes the mmap threshold at MMAP_THRESHOLD_BYTES (which also stops the
dynamic raise), so blocks that size or larger always go back to the system, and caps the
arenas at ARENA_MAX. It is called by `appliance serve` only, before the app is built;
elsewhere (tests, other C libraries) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("appliance")

M_MMAP_THRESHOLD = -3  # mallopt parameters, from glibc's malloc.h
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 256 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Apply the settings above through glibc's `mallopt`; False where there is none."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENA_MAX))
    if not done:
        log.debug("mallopt refused the memory settings")
    return done
