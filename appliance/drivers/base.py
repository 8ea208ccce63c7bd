"""The instance driver contract: what every engine (fake, incus, docker) must do.

A driver talks to one node's engine. It never imports models or Flask: it takes and
returns the small dataclasses below, keeps the engine's own ids opaque (the `ref` it
returns from `create` is stored as `instance.driver_ref` and handed back verbatim), and
reports failures as `DriverError(message, permanent)`: permanent when retrying cannot
help (bad image, unknown ref), transient when it might (engine busy, socket timeout).

Optional features are announced by `capabilities()`; calling one that is not supported
raises `Unsupported(capability)` (409 `unsupported` naming it), never a silent no-op.

Every method is synchronous and may take seconds (the job runner calls it from a worker
thread). Methods are idempotent where the engine allows: starting a running instance,
stopping a stopped one or deleting a deleted one succeeds without doing anything.
`appliance/drivers/fake.py` is the executable description of these semantics, and
`tests/driver_contract.py` is the one suite every driver passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from appliance.errors import DriverError, Unsupported

__all__ = [
    "Capabilities", "Driver", "DriverError", "EngineInfo", "FirewallRule", "HostSample",
    "ImageInfo", "InstanceSpec", "InstanceState", "Limits", "Sample", "Sink", "Terminal",
    "Unsupported",
]

# Power states a driver reports.
RUNNING, STOPPED, MISSING = "running", "stopped", "missing"


class Sink(Protocol):
    """Where a driver writes an archive: a binary file, or anything with its `write`."""

    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True)
class Limits:
    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class InstanceSpec:
    """What to create. `name` is a valid hostname, unique on the node."""

    name: str
    image: str  # the engine's image reference (an Incus alias, a Docker tag)
    limits: Limits
    ssh_keys: tuple[str, ...] = ()  # OpenSSH public key lines for the default user
    password: str | None = None  # for the default user; None: no password login
    user: str = "root"
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InstanceState:
    power: str  # running | stopped | missing (the engine no longer knows the ref)
    addresses: tuple[str, ...] = ()  # IPv4 first, then IPv6; no loopback / link-local
    cpu_seconds: float | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class Capabilities:
    snapshots: bool = False
    backups: bool = False  # export_archive, restore_archive, create_from_archive
    firewall: bool = False
    networks: bool = False
    resize_live: bool = False
    console: bool = False  # logs(): the console / log output
    terminal: bool = False  # open_terminal(): an interactive shell with a TTY
    exec: bool = False
    vm: bool = False
    metrics: bool = False  # metrics() and host_metrics()

    def require(self, name: str) -> None:
        if not getattr(self, name):
            raise Unsupported(name)


@dataclass(frozen=True)
class Sample:
    """One reading of a running instance's resources. CPU time and network bytes are the
    engine's cumulative counters (the caller computes rates between two readings; a
    counter that went down was reset by a restart); memory and disk are levels. None:
    the engine does not report that figure (e.g. disk use on a pool without quotas)."""

    read_at: float  # Unix seconds when the engine answered
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    memory_limit_bytes: int | None = None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    disk_bytes: int | None = None


@dataclass(frozen=True)
class HostSample:
    """What the engine's host has and uses (None: not reported)."""

    cpus: int | None = None
    load1: float | None = None  # 1-minute load average
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    storage_used_bytes: int | None = None
    storage_total_bytes: int | None = None
    instances_running: int | None = None  # every running instance the engine has


@dataclass(frozen=True)
class EngineInfo:
    """What a health check learns about the engine."""

    engine: str  # incus | docker | fake
    version: str
    simulated: bool = False
    details: dict[str, str] = field(default_factory=dict)
    # The host's resources as the engine reports them (None: it does not say).
    vcpus: int | None = None
    memory_mb: int | None = None
    disk_gb: int | None = None


@dataclass(frozen=True)
class ImageInfo:
    """An image the engine has, as image discovery reports it."""

    ref: str  # what InstanceSpec.image takes
    description: str = ""
    os: str = ""
    release: str = ""
    size_bytes: int | None = None


@dataclass(frozen=True)
class FirewallRule:
    direction: str  # in | out
    protocol: str  # tcp | udp | icmp | any
    ports: str = ""  # "22", "8000-8100", "" for all
    source: str = ""  # CIDR for "in" ("" = anywhere)
    action: str = "allow"  # allow | deny


class Terminal(ABC):
    """An interactive login shell with a TTY inside a running instance (`open_terminal`).

    Bytes in, bytes out: nothing is decoded or interpreted. One thread reads while others
    write and resize, so `write` and `resize` are safe to call during a `read`. Once the
    shell has ended (it exited, the instance stopped, `close` was called) `read` returns
    b"" and `write` raises a permanent DriverError.
    """

    @abstractmethod
    def read(self, timeout: float) -> bytes | None:
        """Output that has arrived, waiting at most `timeout` s for some: None when none
        came in time, b"" when the shell has ended (for good)."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send input (keystrokes, a paste) to the shell."""

    @abstractmethod
    def resize(self, cols: int, rows: int) -> None:
        """Set the TTY's size (the shell gets SIGWINCH)."""

    @abstractmethod
    def close(self) -> None:
        """Hang up: end the shell and release the engine connection; idempotent."""


class Driver(ABC):
    """One engine on one node. Constructed with the node's endpoint and options."""

    engine: str = ""
    simulated: bool = False

    def __init__(self, endpoint: str = "", options: dict[str, str] | None = None) -> None:
        self.endpoint = endpoint
        self.options = dict(options or {})

    # -- the engine --------------------------------------------------------------------

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """Which optional features work on this engine (and this host)."""

    @abstractmethod
    def info(self) -> EngineInfo:
        """Reach the engine; raise DriverError (transient) when it does not answer."""

    @abstractmethod
    def images(self) -> list[ImageInfo]:
        """Images the engine can create instances from."""

    # -- lifecycle ---------------------------------------------------------------------

    @abstractmethod
    def create(self, spec: InstanceSpec, started: Callable[[], None] | None = None) -> str:
        """Create and start an instance; return its ref. Permanent error for an unknown image.

        `state(spec.name)` must find the instance afterwards (engines address instances
        by name), so a creation re-run after a crash can see it already happened.
        `started` is called once, as soon as the engine runs the instance and before what
        the create still does after the start (setting the password, watching that it
        keeps running), so the caller can show it running meanwhile; a failure after it
        still fails the create and removes the instance.
        """

    @abstractmethod
    def start(self, ref: str) -> None:
        """Power on (no-op when running)."""

    @abstractmethod
    def stop(self, ref: str, graceful: bool = True, timeout: int = 30) -> None:
        """Power off: graceful asks the init to shut down (forcing after `timeout` s)."""

    @abstractmethod
    def reboot(self, ref: str) -> None:
        """Graceful restart; a stopped instance is started."""

    @abstractmethod
    def reset(self, ref: str) -> None:
        """Hard restart (no graceful shutdown)."""

    @abstractmethod
    def state(self, ref: str) -> InstanceState:
        """Power state and addresses; `missing` (not an error) when the ref is gone."""

    @abstractmethod
    def delete(self, ref: str) -> None:
        """Destroy the instance and its backups' engine objects; no-op when gone."""

    @abstractmethod
    def resize(self, ref: str, limits: Limits) -> None:
        """Apply new limits (live when capabilities().resize_live, else when stopped)."""

    @abstractmethod
    def rebuild(self, ref: str, image: str) -> str:
        """Reinstall from `image` keeping the name and limits; return the (new) ref."""

    def inventory(self, prefix: str) -> list[str]:
        """Refs of the engine's instances whose names start with `prefix` (the
        reconciler reports the ones the appliance does not know; it never touches them)."""
        raise Unsupported("inventory")

    # -- metrics -----------------------------------------------------------------------

    def metrics(self, refs: list[str]) -> dict[str, Sample]:
        """A reading of each running instance among `refs`, in one engine round trip or a
        small bounded pool of them (never one call per instance in a row); refs that are
        stopped or gone are left out. Raises DriverError when the engine does not answer."""
        raise Unsupported("metrics")

    def host_metrics(self) -> HostSample:
        """The host's CPU load, memory, storage pool and running instances, from the
        engine's resource API (and /proc where the engine is on this host)."""
        raise Unsupported("metrics")

    # -- console -----------------------------------------------------------------------

    def logs(self, ref: str, lines: int = 200) -> str:
        """The console / log output, last `lines` lines (what the driver has seen: engines
        that drain their console buffer on read may not keep it across restarts)."""
        raise Unsupported("console")

    def exec(self, ref: str, argv: list[str], timeout: int = 30) -> tuple[int, str]:
        """Run a command inside; return (exit code, stdout and stderr; lines of the two
        may interleave in any order)."""
        raise Unsupported("exec")

    def open_terminal(self, ref: str, cols: int = 80, rows: int = 24) -> Terminal:
        """Start a login shell (bash where the image has it, else sh) with a `cols` x
        `rows` TTY in the running instance, as its root user. Permanent error when the
        instance is not running or has no shell."""
        raise Unsupported("terminal")

    def set_password(self, ref: str, user: str, password: str) -> None:
        """Set `user`'s password inside the running instance; the password appears in no
        command line and no engine record. Permanent error for an unknown user."""
        raise Unsupported("exec")

    # -- backups -----------------------------------------------------------------------
    # An archive is a self-contained file of an instance's disk, kept by the appliance
    # (never on the engine): any node of the same engine restores it, after the instance
    # it was taken of is long gone. The caller hands the driver the open file.

    def export_archive(self, ref: str, out: Sink) -> None:
        """Write an archive of the instance's disk to `out`, consistent while it runs (it
        keeps running; it may pause for a moment). Whatever the engine makes on the way
        (a snapshot, an image) is removed before this returns, on failure too; what a
        crash left is removed by the next export of this instance or `remove_leftovers`."""
        raise Unsupported("backups")

    def restore_archive(self, ref: str, archive: BinaryIO) -> None:
        """Replace the instance's disk by the archive's (one `export_archive` wrote, of
        this or another instance on this engine). The name, limits and network identity
        stay; files, passwords and the rest of the disk are the archive's, and the SSH keys
        the instance was created with are put back. The instance is stopped for it when the
        engine needs that, and left in the power state it had. Permanent error for an
        archive the engine cannot read."""
        raise Unsupported("backups")

    def create_from_archive(self, spec: InstanceSpec, archive: BinaryIO,
                            started: Callable[[], None] | None = None) -> str:
        """`create`, with the disk of the archive instead of `spec.image` (which is only
        a label here); the spec's keys and password are set on it as on any new instance.
        Nothing of the archive stays on the engine but the instance."""
        raise Unsupported("backups")

    def remove_leftovers(self) -> list[str]:
        """Remove what exports and restores interrupted by a crash left on the engine
        (temporary snapshots and images); return what was removed. Only while no backup
        job runs (the appliance calls it at start-up)."""
        raise Unsupported("backups")

    def delete_archive(self, archive_ref: str) -> None:
        """Remove an engine archive kept by a final backup before backups became files in
        the appliance's store (migration 0015); no-op when gone."""
        raise Unsupported("snapshots")

    # -- firewall and networks ---------------------------------------------------------

    def apply_firewall(self, ref: str, rules: list[FirewallRule]) -> None:
        raise Unsupported("firewall")

    def create_network(self, name: str, cidr: str) -> str:
        raise Unsupported("networks")

    def delete_network(self, network_ref: str) -> None:
        raise Unsupported("networks")

    def attach(self, ref: str, network_ref: str) -> None:
        raise Unsupported("networks")

    def detach(self, ref: str, network_ref: str) -> None:
        raise Unsupported("networks")

    def close(self) -> None:  # noqa: B027 - optional hook; most drivers hold nothing
        """Release connections (the registry calls this when a node changes)."""
