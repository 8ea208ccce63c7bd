"""Nodes: the hosts whose engines run instances; health checks, discovery and placement.

Administrators register nodes (engine, endpoint, capacity). A health check asks the
engine for its version through the driver and records healthy/unhealthy with the reason;
a healthy node's images are discovered into the catalog. On first start, when no node
exists, every reachable local engine is registered (Incus and Docker); the fake engine
is only ever registered on purpose and is always marked simulated.

Capacity: what the operator set for the node (filled from the engine's own figures when
it reports them and none are given: Incus /1.0/resources, Docker's NCPU and MemTotal),
times the node's overcommit ratio per resource (defaults: vCPU 4x - containers share
cores well -, memory and disk 1x) is what placement allots. The engine's figures from the
last health check are kept beside it (`engine_*`) for the node page.

Placement picks an enabled, healthy node of the image's engine with enough free
capacity (allotted capacity minus the plans of its live instances), the one with most
free memory first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from peewee import IntegrityError, fn

from appliance import config, drivers
from appliance.db import database
from appliance.drivers.base import Driver, DriverError, EngineInfo, ImageInfo
from appliance.errors import Conflict, InvalidRequest, NotFound, ServiceUnavailable
from appliance.models import App, Backup, Image, Instance, Node, Plan
from appliance.services import audit, clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.principal import Principal

T = TypeVar("T")
NAME_MAX = 100
ENDPOINT_MAX = 500
OPTIONS_MAX = 20  # driver options of a node
log = logging.getLogger("appliance.nodes")

ENGINES = tuple(drivers.ENGINES)
_ENDPOINT = re.compile(r"^(|unix:///\S+|https://\S+|tcp://\S+|fake://\S*)$")
LIVE = ("creating", "running", "stopped", "failed", "deleting")


@dataclass(frozen=True)
class Capacity:
    vcpus: int
    memory_mb: int
    disk_gb: int


@dataclass(frozen=True)
class Ratios:
    """Overcommit per resource: 4.0 allots four times the capacity."""

    vcpu: float = 4.0
    memory: float = 1.0
    disk: float = 1.0


RATIO_MIN, RATIO_MAX = 0.1, 100.0


def ratios_of(node: Node) -> Ratios:
    return Ratios(node.vcpu_ratio_pct / 100, node.memory_ratio_pct / 100,
                  node.disk_ratio_pct / 100)


def _ratio_columns(ratios: Ratios) -> dict[str, int]:
    found = {}
    for field, value in (("vcpu_ratio", ratios.vcpu), ("memory_ratio", ratios.memory),
                         ("disk_ratio", ratios.disk)):
        if not RATIO_MIN <= value <= RATIO_MAX:
            raise InvalidRequest(f"{field} must be between {RATIO_MIN:g} and {RATIO_MAX:g}.",
                                 field=field)
        found[f"{field}_pct"] = round(value * 100)
    return found


def allotted_capacity(node: Node) -> Capacity:
    """What placement may hand out on the node: its capacity times its ratios."""
    return Capacity(node.capacity_vcpus * node.vcpu_ratio_pct // 100,
                    node.capacity_memory_mb * node.memory_ratio_pct // 100,
                    node.capacity_disk_gb * node.disk_ratio_pct // 100)


def engine_capacity(info: EngineInfo) -> Capacity | None:
    """The engine's own figures as a capacity, None unless it reports CPUs and memory
    (the disk, when it reports none, is the data directory's file system)."""
    if not info.vcpus or not info.memory_mb:
        return None
    return Capacity(info.vcpus, info.memory_mb, info.disk_gb or _host_capacity().disk_gb)


def driver_for(node: Node) -> Driver:
    return drivers.connect(node.engine, node.endpoint, json.loads(node.options or "{}"))


def engine_call(call: Callable[[], T]) -> T:
    """A synchronous engine call from a request: engine trouble is 503 engine_unavailable."""
    try:
        return call()
    except DriverError as exc:
        raise ServiceUnavailable(f"The engine did not answer: {exc.message}",
                                 code="engine_unavailable") from None


def _check_fields(engine: str, endpoint: str, capacity: Capacity, name: str) -> None:
    if engine not in ENGINES:
        raise InvalidRequest(f"engine must be one of {', '.join(ENGINES)}.", field="engine")
    if not _ENDPOINT.match(endpoint or ""):
        raise InvalidRequest("endpoint is a unix:///path, https://host:port or tcp://host:port "
                             "(empty: the engine's local socket).", field="endpoint")
    if not name.strip() or len(name) > NAME_MAX:
        raise InvalidRequest(f"A node needs a name of 1-{NAME_MAX} characters.", field="name")
    for field, value in (("capacity_vcpus", capacity.vcpus),
                         ("capacity_memory_mb", capacity.memory_mb),
                         ("capacity_disk_gb", capacity.disk_gb)):
        if value < 1:
            raise InvalidRequest(f"{field} must be at least 1.", field=field)


def _reported_capacity(engine: str, endpoint: str, options: dict[str, str]) -> Capacity:
    """The engine's own figures, for a node registered without a capacity; 400 (field
    capacity_vcpus) when it cannot be asked or reports none."""
    try:
        info = drivers.connect(engine, endpoint, options).info()
    except DriverError as exc:
        raise InvalidRequest("Give the node's capacity: its engine could not be asked for "
                             f"it ({exc.message.rstrip('.')}).", field="capacity_vcpus") from None
    found = engine_capacity(info)
    if found is None:
        raise InvalidRequest("Give the node's capacity: its engine reports none.",
                             field="capacity_vcpus")
    return found


def register_node(principal: Principal, name: str, engine: str, endpoint: str, *,
                  capacity: Capacity | None = None, options: dict[str, str] | None = None,
                  enabled: bool = True, ratios: Ratios | None = None) -> Node:
    """Register a node and check its health at once (an unreachable one is kept, unhealthy).
    Without `capacity`, the engine's own figures (400 when it reports none)."""
    require_admin(principal)
    _check_fields(engine, endpoint, capacity or Capacity(1, 1, 1), name)
    ratio_columns = _ratio_columns(ratios or Ratios())
    if capacity is None:
        capacity = _reported_capacity(engine, endpoint, options or {})
    node = _insert(name.strip(), engine, endpoint, capacity=capacity, options=options or {},
                   enabled=enabled, **ratio_columns)
    with database.atomic():
        audit.record("node.registered", actor=principal.user, target_type="node",
                     target_id=node.id, ip=principal.ip, engine=engine, endpoint=endpoint)
    return check_health(node)


def _insert(name: str, engine: str, endpoint: str, *, capacity: Capacity,
            options: dict[str, str], enabled: bool, **ratio_columns: int) -> Node:
    now = clock.now()
    try:
        with database.atomic():
            return Node.create(
                id=new_id("node"), name=name, engine=engine, endpoint=endpoint,
                options=json.dumps(options), capacity_vcpus=capacity.vcpus,
                capacity_memory_mb=capacity.memory_mb, capacity_disk_gb=capacity.disk_gb,
                enabled=enabled, simulated=engine == "fake", created_at=now, updated_at=now,
                **ratio_columns)
    except IntegrityError:
        raise Conflict("A node with this name exists.", code="node_exists",
                       details={"field": "name"}) from None


def list_nodes(principal: Principal, limit: int = 50,
               cursor: str | None = None) -> pagination.Page[Node]:
    require_admin(principal)
    return pagination.page(Node.select(), Node, limit, cursor)


def get_node(principal: Principal, node_id: str) -> Node:
    require_admin(principal)
    node = Node.get_or_none(Node.id == node_id)
    if node is None:
        raise NotFound("No such node.", code="node_not_found")
    return node


def update_node(principal: Principal, node_id: str, *, enabled: bool | None = None,
                capacity: Capacity | None = None, name: str | None = None,
                ratios: Ratios | None = None) -> Node:
    """Enable, disable, rename, set the capacity (a manual figure, whatever the engine
    reports) or the overcommit ratios (400 naming the field outside 0.1-100)."""
    node = get_node(principal, node_id)
    changes: dict = {}
    if ratios is not None:
        changes.update(_ratio_columns(ratios))
    if enabled is not None:
        changes["enabled"] = enabled
    if name is not None:
        if not name.strip() or len(name) > NAME_MAX:
            raise InvalidRequest(f"A node needs a name of 1-{NAME_MAX} characters.",
                                 field="name")
        changes["name"] = name.strip()
    if capacity is not None:
        _check_fields(node.engine, node.endpoint, capacity, changes.get("name", node.name))
        changes.update(capacity_vcpus=capacity.vcpus, capacity_memory_mb=capacity.memory_mb,
                       capacity_disk_gb=capacity.disk_gb)
    if changes:
        try:
            with database.atomic():
                Node.update(updated_at=clock.now(), **changes).where(
                    Node.id == node.id).execute()
                audit.record("node.updated", actor=principal.user, target_type="node",
                             target_id=node.id, ip=principal.ip,
                             **{k: v for k, v in changes.items() if k != "options"})
        except IntegrityError:
            raise Conflict("A node with this name exists.", code="node_exists",
                           details={"field": "name"}) from None
    return Node.get_by_id(node.id)


def live_instances(node: Node) -> int:
    return Instance.select().where(Instance.node == node, Instance.deleted_at.is_null()).count()


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 instance`, `2 instances`: a count with its noun in the right number."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def referrers(node: Node) -> dict[str, int]:
    """What keeps a node's row: its live instances, the deleted ones kept as history
    (they name the node and its image), backups taken on it, apps of its images."""
    images = Image.select(Image.id).where(Image.node == node)
    instances = Instance.select().where((Instance.node == node) | Instance.image.in_(images))
    return {
        "instances": instances.where(Instance.deleted_at.is_null()).count(),
        "deleted_instances": instances.where(Instance.deleted_at.is_null(False)).count(),
        "backups": Backup.select().where(Backup.node == node).count(),
        "apps": App.select().where(App.image.in_(images)).count(),
    }


_REFERRER_WORDS = {"deleted_instances": ("deleted instance", "deleted instances"),
                   "backups": ("backup", "backups"), "apps": ("one-click app", "one-click apps")}


def delete_node(principal: Principal, node_id: str) -> None:
    """Remove a node and the images found on it. 409 `node_not_empty` while instances
    live on it; 409 `node_in_use`, naming them, while other rows still refer to it (the
    history of deleted instances, backups, apps): disable it instead."""
    node = get_node(principal, node_id)
    with database.atomic():
        found = referrers(node)
        count = found["instances"]
        if count:
            raise Conflict(f"The node still runs {plural(count, 'instance')}; move or delete "
                           "them first.", code="node_not_empty", details={"instances": count})
        held = [plural(found[name], *words) for name, words in _REFERRER_WORDS.items()
                if found[name]]
        if held:
            raise Conflict(f"The node is still referred to by {' and '.join(held)} "
                           "(kept as history); disable it instead.", code="node_in_use",
                           details=found)
        try:
            with database.atomic():
                Image.delete().where(Image.node == node).execute()
                node.delete_instance()
        except IntegrityError:
            log.exception("node %s could not be deleted", node.id)
            raise Conflict("Other records still refer to this node; disable it instead.",
                           code="node_in_use", details=found) from None
        audit.record("node.deleted", actor=principal.user, target_type="node",
                     target_id=node_id, ip=principal.ip, name=node.name)
    drivers.forget(node.engine, node.endpoint)


# Health and discovery ----------------------------------------------------------------


def check_health(node: Node) -> Node:
    """Ask the engine; record healthy (with its version) or unhealthy (with the reason
    in one sentence, `unreachable_reason`; the driver's detail goes to the log). A node
    that was healthy and is not any more is told to the administrators (`node.unhealthy`).

    The engine is asked with no transaction open; the write that follows takes the lock
    (BEGIN IMMEDIATE) only for itself.
    """
    now = clock.now()
    try:
        driver = driver_for(node)
        info = driver.info()
        found = driver.images()
    except DriverError as exc:
        changes: dict[str, Any] = {"health": "unhealthy",
                                   "health_message": unreachable_reason(node, exc)[:500]}
        found = None
        if node.health != "unhealthy":
            log.warning("node %s (%s) at %s: %s", node.name, node.engine,
                        node.endpoint or "the local socket", exc.message)
    else:
        changes = {"health": "healthy", "health_message": "", "engine_version": info.version,
                   "simulated": info.simulated, "engine_vcpus": info.vcpus,
                   "engine_memory_mb": info.memory_mb, "engine_disk_gb": info.disk_gb}
    with database.atomic():
        before = Node.get_by_id(node.id).health  # read under the write lock: told once
        Node.update(last_checked_at=now, **changes).where(Node.id == node.id).execute()
        if found is not None:
            _record_images(node, found)
        if before == "healthy" and changes["health"] == "unhealthy":
            outbox.emit_to_administrators("node.unhealthy", data={
                "node": {"id": node.id, "name": node.name, "engine": node.engine},
                "message": changes["health_message"]})
    if changes["health"] != node.health:
        log.info("node %s (%s) is %s %s", node.name, node.engine, changes["health"],
                 changes["health_message"])
    return Node.get_by_id(node.id)


# What went wrong underneath a driver's error, said the way an operator would say it.
_CAUSES: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (socket.gaierror, "the host name does not resolve"),
    (FileNotFoundError, "there is no socket at that path"),
    (PermissionError, "permission denied"),
    (ConnectionResetError, "the connection was closed"),
    (ConnectionAbortedError, "the connection was closed"),
    (ssl.SSLError, "the TLS handshake failed (check the certificates)"),
    (TimeoutError, "it did not answer in time"),
)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it was raised from or wraps (requests and urllib3 keep the socket's
    error in `args` and `reason`), first to last."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop(0)
        if any(current is other for other in seen):
            continue
        seen.append(current)
        wrapped = [current.__cause__, current.__context__, getattr(current, "reason", None),
                   *getattr(current, "args", ())]
        stack += [item for item in wrapped if isinstance(item, BaseException)]
    return seen


def unreachable_reason(node: Node, exc: DriverError) -> str:
    """One sentence for the node's card: "Cannot reach the engine at <endpoint>: connection
    refused." when the connection failed, else what the engine answered."""
    where = f"the engine at {node.endpoint}" if node.endpoint else f"the local {node.engine} engine"
    for cause in _causes(exc)[1:]:
        for kind, reason in _CAUSES:
            if isinstance(cause, kind):
                return f"Cannot reach {where}: {reason}."
        if "Timeout" in type(cause).__name__:
            return f"Cannot reach {where}: it did not answer in time."
        if "SSLError" in type(cause).__name__:
            return f"Cannot reach {where}: the TLS handshake failed (check the certificates)."
    first = exc.message.strip().splitlines()[0] if exc.message.strip() else "no reason given"
    return f"{where[0].upper()}{where[1:]} is not usable: {first.rstrip('.')}."


def _record_images(node: Node, found: list[ImageInfo]) -> None:
    """Discovered images of a node: new ones are added, gone ones deactivated."""
    now = clock.now()
    known = {image.ref: image for image in Image.select().where(Image.node == node)}
    for info in found:
        if info.ref in known:
            if not known[info.ref].active and known[info.ref].discovered:
                Image.update(active=True, updated_at=now).where(
                    Image.id == known[info.ref].id).execute()
            continue
        Image.create(id=new_id("img"), name=info.description or info.ref, ref=info.ref,
                     family=info.os[:60], version=info.release[:60], engine=node.engine,
                     node=node, description=info.description, discovered=True,
                     min_disk_gb=max(1, -(-(info.size_bytes or 0) // 2**30)),
                     created_at=now, updated_at=now)
    gone = [image.id for ref, image in known.items()
            if image.discovered and ref not in {info.ref for info in found}]
    if gone:
        Image.update(active=False, updated_at=now).where(Image.id.in_(gone)).execute()


def check_all() -> int:
    """The scheduler's health sweep: every node; returns how many are healthy.

    The nodes are read in full before the first engine call: a SELECT still being
    stepped through keeps its read snapshot, and a write begun on that connection after
    another connection's commit fails at once with "database is locked" (SQLite's
    BUSY_SNAPSHOT, which no busy timeout waits out)."""
    return sum(check_health(node).health == "healthy" for node in list(Node.select()))


def _host_capacity() -> Capacity:
    memory_mb = 1024
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    disk_gb = shutil.disk_usage(config.active()["DATA_DIR"]).total // 2**30
    return Capacity(os.cpu_count() or 1, memory_mb, max(1, disk_gb))


LOCAL_ENGINES = ("incus", "docker")


def _answers_locally(engine: str) -> bool:
    try:
        drivers.connect(engine, "").info()
    except (DriverError, ImportError, OSError) as exc:
        log.info("no local %s engine: %s", engine, exc)
        return False
    return True


def _register_local(engine: str, actor: Principal | None) -> Node:
    try:
        reported = engine_capacity(drivers.connect(engine, "").info())
    except DriverError:
        reported = None
    node = _insert(f"local-{engine}", engine, "", capacity=reported or _host_capacity(),
                   options={}, enabled=True)
    with database.atomic():
        audit.record("node.registered", actor=actor.user if actor else None,
                     target_type="node", target_id=node.id, ip=actor.ip if actor else "",
                     engine=engine, via="local" if actor else "first-start")
    log.info("registered the local %s engine as node %s", engine, node.name)
    return check_health(node)


def register_local_engines() -> list[Node]:
    """First start: when no node exists, register every local engine that answers
    (Incus and Docker both, when both do). Returns the nodes; none when nodes exist."""
    if Node.select().exists():
        return []
    return [_register_local(engine, None) for engine in LOCAL_ENGINES
            if _answers_locally(engine)]


def register_missing_local_engines(principal: Principal) -> list[Node]:
    """Register each local engine that answers and has no node on its local socket yet
    (e.g. Docker installed after the first start); returns the new nodes. 409
    `node_exists` when a node already has the name local-<engine>."""
    require_admin(principal)
    known = {node.engine for node in Node.select().where(Node.endpoint == "")}
    return [_register_local(engine, principal) for engine in LOCAL_ENGINES
            if engine not in known and _answers_locally(engine)]


# Placement ---------------------------------------------------------------------------


def used_capacity(node: Node) -> Capacity:
    row = (Plan.select(fn.COALESCE(fn.SUM(Plan.vcpus), 0),
                       fn.COALESCE(fn.SUM(Plan.memory_mb), 0),
                       fn.COALESCE(fn.SUM(Plan.disk_gb), 0))
           .join(Instance, on=(Instance.plan == Plan.id))
           .where(Instance.node == node, Instance.deleted_at.is_null())
           .tuples().first())
    return Capacity(*row)


def free_capacity(node: Node) -> Capacity:
    used, allotted = used_capacity(node), allotted_capacity(node)
    return Capacity(allotted.vcpus - used.vcpus, allotted.memory_mb - used.memory_mb,
                    allotted.disk_gb - used.disk_gb)


def place(plan: Plan, image: Image, any_node: bool = False) -> Node:
    """The node for a new instance of `plan` from `image`; call inside the creating
    transaction (BEGIN IMMEDIATE keeps two placements from sharing the last slot). An
    image found on one node places there, unless `any_node` (a backup's archive, which
    any node of the image's engine can take).

    503 `engine_unavailable` when no enabled node of the image's engine is healthy,
    503 `no_capacity` when none of the healthy ones has room.
    """
    candidates = Node.select().where(Node.enabled, Node.engine == image.engine)
    if image.node_id is not None and not any_node:
        candidates = candidates.where(Node.id == image.node_id)
    if not any(node.health == "healthy" for node in candidates):
        raise ServiceUnavailable(f"No {image.engine} node is reachable right now.",
                                 code="engine_unavailable", details={"engine": image.engine})
    candidates = candidates.where(Node.health == "healthy")
    best, best_free = None, None
    for node in candidates:
        free = free_capacity(node)
        fits = (free.vcpus >= plan.vcpus and free.memory_mb >= plan.memory_mb
                and free.disk_gb >= plan.disk_gb)
        if fits and (best_free is None or free.memory_mb > best_free.memory_mb):
            best, best_free = node, free
    if best is None:
        raise ServiceUnavailable("No node has room for this plan right now.",
                                 code="no_capacity",
                                 details={"engine": image.engine, "plan": plan.slug})
    return best
