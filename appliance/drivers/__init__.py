"""Instance engines behind one contract (base.py): fake, incus, docker.

`connect(engine, endpoint, options)` returns a driver for a node; drivers are cached per
(engine, endpoint, options) because they hold connections. The real drivers import their
client libraries lazily, so an appliance without Docker's SDK still runs Incus and fake.
"""

from __future__ import annotations

import importlib
import threading

from appliance.drivers.base import Driver

ENGINES = {
    "fake": "appliance.drivers.fake:FakeDriver",
    "incus": "appliance.drivers.incus:IncusDriver",
    "docker": "appliance.drivers.docker:DockerDriver",
}

_cache: dict[tuple, Driver] = {}
_lock = threading.Lock()


def driver_class(engine: str) -> type[Driver]:
    module_name, _, class_name = ENGINES[engine].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def connect(engine: str, endpoint: str, options: dict[str, str] | None = None) -> Driver:
    """The (cached) driver for one node. KeyError for an unknown engine."""
    key = (engine, endpoint, tuple(sorted((options or {}).items())))
    with _lock:
        driver = _cache.get(key)
        if driver is None:
            driver = _cache[key] = driver_class(engine)(endpoint, options)
        return driver


def forget(engine: str, endpoint: str) -> None:
    """Drop cached drivers of a node (its settings changed or it was removed)."""
    with _lock:
        for key in [k for k in _cache if k[:2] == (engine, endpoint)]:
            _cache.pop(key).close()
