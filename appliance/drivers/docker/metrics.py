"""Resource readings of the Docker driver (mixed into `DockerDriver`).

`metrics` lists the running managed containers once (with their writable layer's size,
`SizeRw`: the disk used) and takes a one-shot stats reading of each (`stream=false`,
`one-shot=true`: no wait for a second CPU sample) in a pool of at most POOL requests at
a time. Memory used is the cgroup's usage less its inactive file cache, as `docker stats`
shows it; network bytes are summed over the container's interfaces.

`host_metrics` reads `docker info` (CPUs, memory, running containers); where the engine
is on this host (a unix socket) the load and memory in use come from /proc and the
storage from the file system holding Docker's root directory.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from appliance.drivers.base import DriverError, HostSample, Sample
from appliance.drivers.docker.names import MANAGED

POOL = 4  # stats requests at a time


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def reading(stats: dict, disk: int | None, read_at: float) -> Sample:
    """A Sample from one-shot stats as Docker reports them (cgroup v1 or v2)."""
    cpu = _number(((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage"))
    memory = stats.get("memory_stats") or {}
    detail = memory.get("stats") or {}
    usage = _number(memory.get("usage"))
    cache = _number(detail.get("inactive_file", detail.get("total_inactive_file"))) or 0
    rx = tx = None
    for interface in (stats.get("networks") or {}).values():
        rx = (rx or 0) + (_number(interface.get("rx_bytes")) or 0)
        tx = (tx or 0) + (_number(interface.get("tx_bytes")) or 0)
    return Sample(read_at, cpu_seconds=cpu / 1e9 if cpu is not None else None,
                  memory_bytes=max(usage - cache, 0) if usage is not None else None,
                  memory_limit_bytes=_number(memory.get("limit")), rx_bytes=rx, tx_bytes=tx,
                  disk_bytes=disk)


def _proc_load() -> float | None:
    try:
        with open("/proc/loadavg") as file:
            return float(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_memory_used() -> int | None:
    values = {}
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                name, _, rest = line.partition(":")
                values[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return values["MemTotal"] - values["MemAvailable"]


class DockerMetrics:
    """metrics / host_metrics (needs DockerDriver's helpers)."""

    if TYPE_CHECKING:  # DockerDriver's, declared for the type checker
        _base_url: str

        @property
        def _client(self) -> docker.DockerClient: ...
        def _errors(self, what: str) -> AbstractContextManager[None]: ...

    def metrics(self, refs: list[str]) -> dict[str, Sample]:
        wanted = set(refs)
        if not wanted:
            return {}
        with self._errors("listing running containers"):
            listed = self._client.api.containers(
                size=True, filters={"label": [f"{MANAGED}=true"], "status": ["running"]})
        sizes: dict[str, int | None] = {}
        for container in listed:
            for name in container.get("Names") or []:
                if name.lstrip("/") in wanted:
                    # SizeRw is left out when the writable layer is empty
                    sizes[name.lstrip("/")] = _number(container.get("SizeRw", 0))

        def one(name: str) -> tuple[str, Sample | None]:
            asked = time.time()
            try:
                with self._errors(f"reading the stats of {name}"):
                    stats = self._client.api.stats(name, stream=False, one_shot=True)
            except DriverError as exc:
                if exc.permanent:  # gone or stopped since the list: left out
                    return name, None
                raise
            # The engine read the counters meanwhile: the middle is the best guess.
            return name, reading(stats, sizes[name], (asked + time.time()) / 2)

        with ThreadPoolExecutor(max_workers=min(POOL, max(len(sizes), 1))) as pool:
            results = list(pool.map(one, sorted(sizes)))
        return {name: sample for name, sample in results if sample is not None}

    def host_metrics(self) -> HostSample:
        with self._errors("asking Docker for its resources"):
            system = self._client.info()
        local = self._base_url.startswith("unix://")
        used = total = None
        root = system.get("DockerRootDir")
        if local and root and os.path.isdir(root):
            disk = shutil.disk_usage(root)
            used, total = disk.used, disk.total
        return HostSample(
            cpus=_number(system.get("NCPU")),
            load1=_proc_load() if local else None,
            memory_used_bytes=_proc_memory_used() if local else None,
            memory_total_bytes=_number(system.get("MemTotal")),
            storage_used_bytes=used, storage_total_bytes=total,
            instances_running=_number(system.get("ContainersRunning")))
