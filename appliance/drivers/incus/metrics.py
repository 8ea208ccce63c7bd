"""Resource readings of the Incus driver (mixed into `IncusDriver`).

`metrics` is one request whatever the number of instances: the instance list with its
state (`/1.0/instances?recursion=2`), of which the asked-for running ones are read: CPU
time (`state.cpu.usage`, ns), memory (`state.memory.usage`, and `total`, the limit),
network bytes summed over every interface but `lo`, and the root disk's use where the
pool reports it (a `dir` pool without quotas reports none: None). `host_metrics` reads
`/1.0/resources` (CPU threads, 1-minute load, memory), the resources of the profile's
root disk pool and the count of running instances.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from appliance.drivers.base import DriverError, HostSample, Sample
from appliance.drivers.incus.api import quote_name


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def reading(state: dict, read_at: float) -> Sample:
    """A Sample from an instance's `state` as Incus reports it."""
    cpu = _number((state.get("cpu") or {}).get("usage"))
    memory = state.get("memory") or {}
    rx = tx = None
    for name, interface in (state.get("network") or {}).items():
        counters = interface.get("counters") or {}
        if name == "lo" or not counters:
            continue
        rx = (rx or 0) + (_number(counters.get("bytes_received")) or 0)
        tx = (tx or 0) + (_number(counters.get("bytes_sent")) or 0)
    root = (state.get("disk") or {}).get("root") or {}
    return Sample(read_at, cpu_seconds=cpu / 1e9 if cpu is not None else None,
                  memory_bytes=_number(memory.get("usage")),
                  memory_limit_bytes=_number(memory.get("total")) or None,
                  rx_bytes=rx, tx_bytes=tx, disk_bytes=_number(root.get("usage")))


def _load1(load: dict) -> float | None:
    """The 1-minute load average, whatever the spelling of the key (`Average1Min` in
    Incus 6.0's answer, `average1min` in others)."""
    for key, value in load.items():
        if key.lower().replace("_", "") in ("average1min", "min1", "load1"):
            return float(value)
    return None


class IncusMetrics:
    """metrics / host_metrics (needs IncusDriver's helpers)."""

    if TYPE_CHECKING:  # IncusDriver's, declared for the type checker
        def _call(self, method: str, path: str, **kwargs: Any) -> Any: ...
        def _root_disk(self) -> tuple[str, dict]: ...

    def metrics(self, refs: list[str]) -> dict[str, Sample]:
        wanted = set(refs)
        if not wanted:
            return {}
        asked = time.time()
        listed = self._call("GET", "/1.0/instances", params={"recursion": 2}) or []
        read_at = (asked + time.time()) / 2  # the engine read the counters meanwhile
        found = {}
        for instance in listed:
            state = instance.get("state") or {}
            name = instance.get("name")
            if name in wanted and state.get("status") == "Running":
                found[name] = reading(state, read_at)
        return found

    def host_metrics(self) -> HostSample:
        resources = self._call("GET", "/1.0/resources") or {}
        memory = resources.get("memory") or {}
        used = total = None
        try:
            pool = self._root_disk()[1].get("pool")
            if pool:
                space = (self._call("GET", f"/1.0/storage-pools/{quote_name(pool)}/resources")
                         or {}).get("space") or {}
                used, total = _number(space.get("used")), _number(space.get("total"))
        except DriverError as exc:
            if not exc.permanent:
                raise
        listed = self._call("GET", "/1.0/instances", params={"recursion": 1}) or []
        return HostSample(
            cpus=_number((resources.get("cpu") or {}).get("total")),
            load1=_load1(resources.get("load") or {}),
            memory_used_bytes=_number(memory.get("used")),
            memory_total_bytes=_number(memory.get("total")),
            storage_used_bytes=used, storage_total_bytes=total,
            instances_running=sum(1 for i in listed if i.get("status") == "Running"))
