"""An in-process engine that documents the driver contract by doing it.

Deterministic and instant (unless the node's option `delay_seconds` asks it to take its
time creating, starting and stopping, as a real engine does - for demos): instances
are dicts in memory (shared by every FakeDriver of one endpoint, so a "node" survives
the driver being rebuilt), addresses come from 10.99.0.0/16 in creation order. Used by
unit tests and by the demo mode, and always reported as simulated - never the silent
default when a real engine is configured.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from appliance.drivers.base import (
    MISSING,
    RUNNING,
    STOPPED,
    Capabilities,
    Driver,
    DriverError,
    EngineInfo,
    FirewallRule,
    ImageInfo,
    InstanceSpec,
    InstanceState,
    Limits,
)

IMAGES = (
    ImageInfo("fake/debian-12", "Debian 12 (simulated)", "debian", "12", 300_000_000),
    ImageInfo("fake/alpine-3", "Alpine 3 (simulated)", "alpine", "3.20", 8_000_000),
)

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
        return Capabilities(snapshots=True, firewall=True, networks=True, resize_live=True,
                            console=True, exec=True)

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
            "snapshots": {}, "firewall": [], "networks": set(), "boots": 1}
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
            self._log(instance, "shut down" if graceful else "powered off")

    def reboot(self, ref: str) -> None:
        instance = self._get(ref)
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
        self._node["instances"].pop(ref, None)

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
                        password=None)
        self._log(instance, f"rebuilt from {image}")
        return ref

    def inventory(self, prefix: str) -> list[str]:
        return sorted(ref for ref in self._node["instances"] if ref.startswith(prefix))

    def logs(self, ref: str, lines: int = 200) -> str:
        return "\n".join(self._get(ref)["log"][-lines:])

    def exec(self, ref: str, argv: list[str], timeout: int = 30) -> tuple[int, str]:  # noqa: PLR0911
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
        if argv[:1] == ["cat"] and len(argv) == 2:
            if argv[1] == "/root/.ssh/authorized_keys" and instance["ssh_keys"]:
                return 0, "".join(key + "\n" for key in instance["ssh_keys"])
            return 1, f"cat: can't open '{argv[1]}': No such file or directory\n"
        return 127, f"{argv[0]}: not found (simulated)\n"

    def snapshot(self, ref: str, name: str) -> str:
        instance = self._get(ref)
        instance["snapshots"][name] = {"image": instance["image"], "limits": instance["limits"]}
        return f"{ref}/{name}"

    def restore(self, ref: str, backup_ref: str) -> None:
        instance = self._get(ref)
        snapshot = instance["snapshots"].get(backup_ref.rpartition("/")[2])
        if snapshot is None:
            raise DriverError(f"no backup {backup_ref}", permanent=True)
        instance["image"] = snapshot["image"]
        self._log(instance, f"restored {backup_ref}")

    def delete_backup(self, ref: str, backup_ref: str) -> None:
        instance = self._node["instances"].get(ref)
        if instance is not None:
            instance["snapshots"].pop(backup_ref.rpartition("/")[2], None)

    def export_template(self, ref: str, name: str) -> str:
        instance = self._get(ref)
        image_ref = f"fake/template-{name}"
        self._node["images"][image_ref] = ImageInfo(image_ref, f"Template of {instance['name']}")
        return image_ref

    def set_password(self, ref: str, user: str, password: str) -> None:
        instance = self._get(ref)
        if "\n" in password or not password:
            raise DriverError("a password is one non-empty line", permanent=True)
        if instance["power"] != RUNNING:
            raise DriverError(f"{ref} is not running", permanent=True)
        instance["password"] = password

    def archive(self, ref: str, name: str) -> str:
        archive_ref = f"fake/archive-{name}"
        self._node["archives"][archive_ref] = dict(self._get(ref))
        return archive_ref

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
