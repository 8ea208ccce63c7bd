"""The sampling tick: every INSTANCE_METRICS_INTERVAL_SECONDS, each enabled node's
running instances are read in one engine round trip (Docker: a small bounded pool, see
its driver) together with the host's figures, and the results written in one
transaction.

Rates come from counters: the engine's cumulative CPU time and network bytes are kept
per instance (`metric_counter`, with when they were read); the next reading gives
CPU % = CPU seconds used / (seconds elapsed x the plan's vCPUs) x 100, and bytes per
second likewise. No rate is computed across a counter that went down (a restart reset
it) or a gap longer than GAP_INTERVALS intervals (the instance was stopped meanwhile):
that sample only sets the new base. Memory and disk are levels, stored as read.

Nodes are read in parallel (at most NODE_POOL at a time), outside any transaction; a
node that fails is logged and skipped, the others are written; disabled and unhealthy
nodes are not asked. Nodes whose engine has no
metrics (`capabilities().metrics` false) are skipped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from peewee import EXCLUDED

from appliance import config
from appliance.db import database
from appliance.drivers.base import DriverError, HostSample, Sample
from appliance.models import Instance, MetricCounter, Node, Plan
from appliance.services import clock, settings
from appliance.services.instances import nodes
from appliance.services.metrics import store

NODE_POOL = 8
LATEST_COLUMNS = ("read_at", "cpu_seconds", "rx_bytes", "tx_bytes", *store.INSTANCES.fields)
GAP_INTERVALS = 3
log = logging.getLogger("appliance.metrics")


@dataclass
class NodeReading:
    node_id: str
    host: HostSample | None = None
    samples: dict[str, Sample] = field(default_factory=dict)  # instance id -> sample
    error: str | None = None


def interval_seconds() -> int:
    return settings.get(config.active(), "INSTANCE_METRICS_INTERVAL_SECONDS")


def _running() -> dict[str, list[tuple[str, str, int]]]:
    """Running instances by node: (instance id, engine ref, plan vCPUs)."""
    rows: Any = (Instance.select(Instance.node, Instance.id, Instance.driver_ref, Plan.vcpus)
            .join(Plan, on=(Instance.plan == Plan.id))
            .where(Instance.status == "running", Instance.deleted_at.is_null(),
                   Instance.driver_ref.is_null(False)).tuples())
    found: dict[str, list[tuple[str, str, int]]] = {}
    for node_id, instance_id, ref, vcpus in rows:
        found.setdefault(node_id, []).append((instance_id, ref, vcpus))
    return found


def _read_node(node: Node, instances: list[tuple[str, str, int]]) -> NodeReading:
    reading = NodeReading(node.id)
    try:
        driver = nodes.driver_for(node)
        if not driver.capabilities().metrics:
            return reading
        by_ref = {ref: instance_id for instance_id, ref, _ in instances}
        samples = driver.metrics(sorted(by_ref)) if by_ref else {}
        reading.samples = {by_ref[ref]: sample for ref, sample in samples.items()
                           if ref in by_ref}
        reading.host = driver.host_metrics()
    except DriverError as exc:
        reading.error = exc.message
        log.warning("metrics of node %s: %s", node.name, exc.message)
    return reading


def read_all(node_list: Iterable[Node], running: dict[str, list[tuple[str, str, int]]]
             ) -> list[NodeReading]:
    """Read every node (in parallel, NODE_POOL at a time)."""
    node_list = list(node_list)
    if not node_list:
        return []
    with ThreadPoolExecutor(max_workers=min(NODE_POOL, len(node_list))) as pool:
        return list(pool.map(lambda node: _read_node(node, running.get(node.id, [])),
                             node_list))


def _rate(now_value: float | None, base_value: float | None, seconds: float) -> float | None:
    if now_value is None or base_value is None or now_value < base_value or seconds <= 0:
        return None
    return (now_value - base_value) / seconds


def figures(sample: Sample, base: Any, vcpus: int,
            gap_seconds: float) -> dict[str, int | None]:
    """The stored figures of one sample, given the instance's previous counters (a row
    with read_at, cpu_seconds, rx_bytes and tx_bytes; None for none)."""
    cpu = rx = tx = None
    if base is not None:
        seconds = sample.read_at - base.read_at
        if 0 < seconds <= gap_seconds:
            used = _rate(sample.cpu_seconds, base.cpu_seconds, seconds)
            if used is not None:
                cpu = round(min(max(used / max(vcpus, 1), 0.0), 1.0) * 10000)
            received = _rate(sample.rx_bytes, base.rx_bytes, seconds)
            sent = _rate(sample.tx_bytes, base.tx_bytes, seconds)
            rx = round(received) if received is not None else None
            tx = round(sent) if sent is not None else None
    return {"cpu": cpu, "memory": sample.memory_bytes, "rx": rx, "tx": tx,
            "disk": sample.disk_bytes}


def host_figures(host: HostSample) -> dict[str, int | None]:
    return {"load": round(host.load1 * 100) if host.load1 is not None else None,
            "memory_used": host.memory_used_bytes, "memory_total": host.memory_total_bytes,
            "storage_used": host.storage_used_bytes,
            "storage_total": host.storage_total_bytes, "running": host.instances_running}


def write(readings: list[NodeReading], vcpus: dict[str, int], now: dt.datetime) -> dict:
    """Turn readings into rows (rates against the stored counters) in one transaction."""
    gap = GAP_INTERVALS * interval_seconds()
    samples = {iid: s for reading in readings for iid, s in reading.samples.items()}
    with database.atomic():
        bases: dict[str, Any] = {}
        if samples:
            stored: Any = (MetricCounter.select(
                MetricCounter.instance.alias("instance_id"), MetricCounter.read_at,
                MetricCounter.cpu_seconds, MetricCounter.rx_bytes, MetricCounter.tx_bytes)
                .where(MetricCounter.instance.in_(list(samples))).namedtuples())
            bases = {row.instance_id: row for row in stored}
        rows = [(iid, figures(s, bases.get(iid), vcpus[iid], gap))
                for iid, s in samples.items()]
        latest = dict(rows)
        written = store.add(store.INSTANCES, rows, now)
        hosts = [(r.node_id, host_figures(r.host)) for r in readings if r.host is not None]
        written += store.add(store.NODES, hosts, now)
        if samples:
            (MetricCounter.insert_many([
                {"instance": iid, "read_at": s.read_at, "cpu_seconds": s.cpu_seconds,
                 "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes, **latest[iid]}
                for iid, s in samples.items()])
             .on_conflict(conflict_target=[MetricCounter.instance], update={
                 getattr(MetricCounter, name): getattr(EXCLUDED, name)
                 for name in LATEST_COLUMNS}).execute())
    return {"instances": len(rows), "nodes": len(hosts), "rows": written,
            "failed_nodes": sum(1 for r in readings if r.error)}


def tick(now: dt.datetime | None = None) -> dict:
    """Sample every enabled node's running instances and its host; write them.

    The rows read first in full (no cursor stays open across the engine calls)."""
    now = now or clock.now()
    running = _running()
    vcpus = {iid: cpus for node_rows in running.values() for iid, _, cpus in node_rows}
    # An unhealthy node would make each tick wait for its engine's timeout; the health
    # check (check_nodes) finds it healthy again.
    node_list = list(Node.select().where(Node.enabled == True,  # noqa: E712 - SQL
                                         Node.health != "unhealthy"))
    readings = read_all(node_list, running)
    return write(readings, vcpus, now)
