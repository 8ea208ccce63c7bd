"""An in-process engine that documents the driver contract by doing it.

Deterministic and instant (unless the node's option `delay_seconds` asks it to take its
time creating, starting and stopping, as a real engine does - for demos): instances
are dicts in memory (shared by every FakeDriver of one endpoint, so a "node" survives
the driver being rebuilt), addresses come from 10.99.0.0/16 in creation order. Used by
unit tests and by the demo mode, and always reported as simulated - never the silent
default when a real engine is configured.

Metrics are simulated too: each running instance's CPU time and network bytes grow with
the real time between two readings at a rate that drifts slowly (its own phase, so the
graphs of two instances differ), memory wanders between a fifth and a half of the
limit and the disk holds the image plus what was written; the host reports the sum.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import BinaryIO

from appliance.drivers.base import (
    MISSING,
    RUNNING,
    STOPPED,
    Capabilities,
    Driver,
    DriverError,
    EngineInfo,
    FirewallRule,
    HostSample,
    ImageInfo,
    InstanceSpec,
    InstanceState,
    Limits,
    Sample,
    Sink,
    Terminal,
)
from appliance.drivers.fake_terminal import FakeTerminal

IMAGES = (
    ImageInfo("fake/debian-12", "Debian 12 (simulated)", "debian", "12", 300_000_000),
    ImageInfo("fake/alpine-3", "Alpine 3 (simulated)", "alpine", "3.20", 8_000_000),
)

ARCHIVE_FORMAT = "appliance-fake-archive/1"
# The one way to write a file the simulated exec understands: `sh -c WRITE_FILE sh PATH
# CONTENT` (a real shell runs it the same way, so tests use it on every engine).
WRITE_FILE = 'printf "%s" "$2" > "$1"'

_nodes: dict[str, dict] = {}
_lock = threading.Lock()


def _node(endpoint: str) -> dict:
    with _lock:
        return _nodes.setdefault(endpoint, {
            "instances": {}, "networks": {}, "images": {i.ref: i for i in IMAGES},
            "archives": {},
            "serial": itertools.count(1)})


def forget_all() -> None:
    """Tests: every fake node starts empty."""
    with _lock:
        _nodes.clear()


class FakeDriver(Driver):
    engine = "fake"
    simulated = True

    def __init__(self, endpoint: str = "fake://default",
                 options: dict[str, str] | None = None) -> None:
        super().__init__(endpoint, options)

    @property
    def _node(self) -> dict:
        # Looked up on each use: `forget_all()` must reach drivers already cached.
        return _node(self.endpoint)

    def _pause(self, share: float = 1.0) -> None:
        delay = float(self.options.get("delay_seconds", "0") or 0)
        if delay > 0:
            time.sleep(min(delay, 60.0) * share)

    def _get(self, ref: str) -> dict:
        instance = self._node["instances"].get(ref)
        if instance is None:
            raise DriverError(f"no instance {ref}", permanent=True)
        return instance

    def _log(self, instance: dict, line: str) -> None:
        instance["log"].append(line)

    def capabilities(self) -> Capabilities:
        return Capabilities(snapshots=True, backups=True, firewall=True, networks=True,
                            resize_live=True, console=True, terminal=True, exec=True,
                            metrics=True)

    def info(self) -> EngineInfo:
        if self.options.get("down") == "true":
            raise DriverError("the simulated engine is down")
        return EngineInfo("fake", "1.0", simulated=True)

    def images(self) -> list[ImageInfo]:
        return list(self._node["images"].values())

    def create(self, spec: InstanceSpec, started: Callable[[], None] | None = None) -> str:
        self._pause()
        if spec.image not in self._node["images"]:
            raise DriverError(f"unknown image {spec.image}", permanent=True)
        if any(i["name"] == spec.name for i in self._node["instances"].values()):
            raise DriverError(f"an instance named {spec.name} exists", permanent=True)
        serial = next(self._node["serial"])
        ref = spec.name
        self._node["instances"][ref] = {
            "name": spec.name, "image": spec.image, "limits": spec.limits,
            "power": RUNNING, "address": f"10.99.{serial // 250}.{serial % 250 + 2}",
            "ssh_keys": list(spec.ssh_keys), "password": spec.password, "log": [],
            "spec_keys": tuple(spec.ssh_keys),
            "files": {}, "firewall": [], "networks": set(), "boots": 1}
        self._log(self._node["instances"][ref], f"{spec.name} created from {spec.image}")
        if started is not None:
            started()
        return ref

    def start(self, ref: str) -> None:
        self._pause(0.5)
        instance = self._get(ref)
        if instance["power"] != RUNNING:
            instance["power"] = RUNNING
            instance["boots"] += 1
            self._log(instance, "started")

    def stop(self, ref: str, graceful: bool = True, timeout: int = 30) -> None:
        self._pause(0.5)
        instance = self._get(ref)
        if instance["power"] != STOPPED:
            instance["power"] = STOPPED
            self._hang_up(instance)
            self._log(instance, "shut down" if graceful else "powered off")

    def reboot(self, ref: str) -> None:
        instance = self._get(ref)
        self._hang_up(instance)
        instance["power"] = RUNNING
        instance["boots"] += 1
        self._log(instance, "rebooted")

    def reset(self, ref: str) -> None:
        self.reboot(ref)

    def state(self, ref: str) -> InstanceState:
        instance = self._node["instances"].get(ref)
        if instance is None:
            return InstanceState(MISSING)
        running = instance["power"] == RUNNING
        return InstanceState(instance["power"], (instance["address"],) if running else (),
                             cpu_seconds=1.5 * instance["boots"] if running else None,
                             memory_bytes=instance["limits"].memory_mb * 2**20 // 4
                             if running else None)

    def delete(self, ref: str) -> None:
        instance = self._node["instances"].pop(ref, None)
        if instance is not None:
            self._hang_up(instance)

    def metrics(self, refs: list[str]) -> dict[str, Sample]:
        if self.options.get("down") == "true":
            raise DriverError("the simulated engine is down")
        now = time.time()
        found = {}
        for ref in refs:
            instance = self._node["instances"].get(ref)
            if instance is None or instance["power"] != RUNNING:
                continue
            found[ref] = self._reading(instance, now)
        return found

    def _reading(self, instance: dict, now: float) -> Sample:
        limits: Limits = instance["limits"]
        counters = instance.setdefault("counters", {"at": now, "cpu": 0.0, "rx": 0, "tx": 0})
        phase = (sum(map(ord, instance["name"])) % 360) / 57.3
        wave = 0.5 + 0.5 * math.sin(now / 900 + phase)  # one cycle in about 90 minutes
        elapsed = max(now - counters["at"], 0.0)
        counters["cpu"] += elapsed * limits.vcpus * (0.05 + 0.4 * wave)
        counters["rx"] += int(elapsed * (2000 + 30000 * wave))
        counters["tx"] += int(elapsed * (1000 + 12000 * (1 - wave)))
        counters["at"] = now
        memory = limits.memory_mb * 2**20
        written = sum(len(content) for content in instance["files"].values())
        return Sample(now, cpu_seconds=counters["cpu"],
                      memory_bytes=int(memory * (0.2 + 0.3 * wave)), memory_limit_bytes=memory,
                      rx_bytes=counters["rx"],
                      tx_bytes=counters["tx"], disk_bytes=150 * 2**20 + written)

    def host_metrics(self) -> HostSample:
        if self.options.get("down") == "true":
            raise DriverError("the simulated engine is down")
        now = time.time()
        running = [i for i in self._node["instances"].values() if i["power"] == RUNNING]
        readings = [self._reading(i, now) for i in running]
        return HostSample(
            cpus=16, load1=round(sum(0.05 + 0.4 * (0.5 + 0.5 * math.sin(now / 900))
                                     for _ in running), 2),
            memory_used_bytes=2**30 + sum(r.memory_bytes or 0 for r in readings),
            memory_total_bytes=64 * 2**30,
            storage_used_bytes=20 * 2**30 + sum(r.disk_bytes or 0 for r in readings),
            storage_total_bytes=1000 * 2**30, instances_running=len(running))

    def resize(self, ref: str, limits: Limits) -> None:
        instance = self._get(ref)
        if limits.disk_gb < instance["limits"].disk_gb:
            raise DriverError("the disk cannot shrink", permanent=True)
        instance["limits"] = limits

    def rebuild(self, ref: str, image: str) -> str:
        instance = self._get(ref)
        if image not in self._node["images"]:
            raise DriverError(f"unknown image {image}", permanent=True)
        # A fresh disk, as on the real engines: the keys given at creation are installed
        # again, keys added since and the password are gone.
        instance.update(image=image, power=RUNNING, ssh_keys=list(instance["spec_keys"]),
                        password=None, files={})
        self._log(instance, f"rebuilt from {image}")
        return ref

    def inventory(self, prefix: str) -> list[str]:
        return sorted(ref for ref in self._node["instances"] if ref.startswith(prefix))

    def logs(self, ref: str, lines: int = 200) -> str:
        return "\n".join(self._get(ref)["log"][-lines:])

    def open_terminal(self, ref: str, cols: int = 80, rows: int = 24) -> Terminal:
        instance = self._get(ref)
        if instance["power"] != RUNNING:
            raise DriverError(f"{ref} is not running", permanent=True)
        terminal = FakeTerminal(instance["name"], cols, rows)
        instance.setdefault("terminals", []).append(terminal)
        return terminal

    def _hang_up(self, instance: dict) -> None:
        for terminal in instance.pop("terminals", []):
            terminal.hang_up()

    def exec(self, ref: str, argv: list[str], timeout: int = 30) -> tuple[int, str]:
        instance = self._get(ref)
        if instance["power"] != RUNNING:
            raise DriverError("the instance is not running", permanent=True)
        if argv[:1] == ["hostname"]:
            return 0, instance["name"] + "\n"
        if argv[:1] == ["echo"]:
            return 0, " ".join(argv[1:]) + "\n"
        if argv[:2] == ["sh", "-c"] and len(argv) == 5:  # scripts with "$1" as the argument
            script, argument = argv[2], argv[4]
            if "chpasswd" in script:
                instance["password"] = argument.partition(":")[2]
                return 0, ""
            if "authorized_keys" in script:
                if argument not in instance["ssh_keys"]:
                    instance["ssh_keys"].append(argument)
                return 0, ""
        return self._file_command(instance, argv)

    def _file_command(self, instance: dict, argv: list[str]) -> tuple[int, str]:
        """Writing (WRITE_FILE), removing (rm -f) and reading (cat) simulated files."""
        if argv[:4] == ["sh", "-c", WRITE_FILE, "sh"] and len(argv) == 6:
            instance["files"][argv[4]] = argv[5]
            return 0, ""
        if argv[:2] == ["rm", "-f"]:
            for path in argv[2:]:
                instance["files"].pop(path, None)
            return 0, ""
        if argv[:1] == ["cat"] and len(argv) == 2:
            if argv[1] == "/root/.ssh/authorized_keys" and instance["ssh_keys"]:
                return 0, "".join(key + "\n" for key in instance["ssh_keys"])
            if argv[1] in instance["files"]:
                return 0, instance["files"][argv[1]]
            return 1, f"cat: can't open '{argv[1]}': No such file or directory\n"
        return 127, f"{argv[0]}: not found (simulated)\n"

    def set_password(self, ref: str, user: str, password: str) -> None:
        instance = self._get(ref)
        if "\n" in password or not password:
            raise DriverError("a password is one non-empty line", permanent=True)
        if instance["power"] != RUNNING:
            raise DriverError(f"{ref} is not running", permanent=True)
        instance["password"] = password

    # -- backups -------------------------------------------------------------------------
    # An archive is a JSON document of what the simulated disk holds: the image it came
    # from, the files written into it (exec), the root password and the authorized keys.

    def export_archive(self, ref: str, out: Sink) -> None:
        instance = self._get(ref)
        self._pause()  # an archive takes a real engine a while
        out.write(json.dumps({
            "format": ARCHIVE_FORMAT, "name": instance["name"], "image": instance["image"],
            "files": instance["files"], "password": instance["password"],
            "ssh_keys": instance["ssh_keys"]}, sort_keys=True).encode())

    def _read_archive(self, archive: BinaryIO) -> dict:
        try:
            disk = json.loads(archive.read())
        except ValueError:
            disk = None
        if not isinstance(disk, dict) or disk.get("format") != ARCHIVE_FORMAT:
            raise DriverError("not an archive of the simulated engine", permanent=True)
        return disk

    def restore_archive(self, ref: str, archive: BinaryIO) -> None:
        instance = self._get(ref)
        disk = self._read_archive(archive)
        self._pause()
        keys = [*disk["ssh_keys"], *(key for key in instance["spec_keys"]
                                     if key not in disk["ssh_keys"])]
        instance.update(image=disk["image"], files=dict(disk["files"]),
                        password=disk["password"], ssh_keys=keys)
        self._log(instance, f"restored from an archive of {disk['name']}")

    def create_from_archive(self, spec: InstanceSpec, archive: BinaryIO,
                            started: Callable[[], None] | None = None) -> str:
        disk = self._read_archive(archive)
        ref = self.create(replace(spec, image=disk["image"]), started)
        instance = self._get(ref)
        instance["files"] = dict(disk["files"])
        if spec.password is None:
            instance["password"] = disk["password"]
        self._log(instance, f"made from an archive of {disk['name']}")
        return ref

    def remove_leftovers(self) -> list[str]:
        return []  # an export or restore here is instant: nothing is ever left

    def delete_archive(self, archive_ref: str) -> None:
        self._node["archives"].pop(archive_ref, None)

    def apply_firewall(self, ref: str, rules: list[FirewallRule]) -> None:
        self._get(ref)["firewall"] = list(rules)

    def create_network(self, name: str, cidr: str) -> str:
        self._node["networks"][name] = cidr
        return name

    def delete_network(self, network_ref: str) -> None:
        self._node["networks"].pop(network_ref, None)

    def attach(self, ref: str, network_ref: str) -> None:
        if network_ref not in self._node["networks"]:
            raise DriverError(f"no network {network_ref}", permanent=True)
        self._get(ref)["networks"].add(network_ref)

    def detach(self, ref: str, network_ref: str) -> None:
        self._get(ref)["networks"].discard(network_ref)
