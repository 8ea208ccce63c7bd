"""Resource metrics over JSON: an instance's CPU, memory, network and disk, and a node's
host figures for administrators (services/metrics)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, Schema
from appliance.services.instances import nodes
from appliance.services.metrics import series
from appliance.services.principal import Principal

bp = ApiBlueprint("metrics_api", __name__)

Window = Literal["1h", "24h", "7d", "30d"]
Bucket = Literal["1m", "5m", "15m", "1h", "6h", "1d"]
COMBINATIONS = (
    "Default buckets: 1h in 1m, 24h in 5m, 7d in 1h, 30d in 6h. 1m buckets are read from "
    "minute samples (kept INSTANCE_METRICS_MINUTE_HOURS, 24 h by default), 5m and 15m "
    "from 5-minute rollups (INSTANCE_METRICS_FIVE_MINUTE_DAYS, 7 days), 1h and longer "
    "from hourly rollups (INSTANCE_METRICS_HOURLY_DAYS, 90 days). 400 naming `bucket` "
    "for a bucket not smaller than the window, more than "
    f"{series.MAX_POINTS} points, or finer than what is kept for the window (7d in 1m).")
MISSING = ("Every bucket of the window is present, oldest first, the current (partial) "
           "one last. A bucket without samples (the instance stopped, not yet created, "
           "or samples purged) is `null`: explicitly missing, never zero-filled.")


class ResourceMetricsQuery(Schema):
    window: Window = Field("24h", description="How far back.")
    bucket: Bucket | None = Field(None, description="One point per bucket. " + COMBINATIONS)


class MetricLineOut(Schema):
    name: str
    unit: Literal["percent", "bytes", "bytes_per_second", "load", "count"]
    description: str
    values: list[int | float | None] = Field(description="One per entry of `times`; null: no "
                                                   "sample in that bucket.")


class ResourceMetricsBase(Schema):
    window: str
    bucket: str
    resolution: str = Field(description="The stored resolution the buckets were "
                                        "averaged from (1m, 5m or 1h).")
    interval_seconds: int = Field(description="How often samples are taken "
                                              "(INSTANCE_METRICS_INTERVAL_SECONDS).")
    missing: Literal["null"] = Field("null", description=MISSING)
    times: list[dt.datetime] = Field(description="Start of each bucket (UTC, aligned to "
                                                 "its length).")
    series: list[MetricLineOut]


class InstanceLimits(Schema):
    vcpus: int
    memory_bytes: int
    disk_bytes: int


class LatestSampleOut(Schema):
    at: dt.datetime = Field(description="When the engine was read.")
    values: dict[str, int | float | None] = Field(
        description="The figures of that one sample by series name (CPU over the interval "
                    "before it); null: not reported.")


class InstanceMetricsOut(ResourceMetricsBase):
    instance_id: str
    latest: LatestSampleOut | None = Field(description="The newest sample, not averaged (null "
                                                 "while the instance is not running or "
                                                 "before its first sample).")
    limits: InstanceLimits = Field(description="The plan's limits, the scale of the "
                                               "graphs (CPU percent is of `vcpus`).")


class NodeResourceAmounts(Schema):
    vcpus: int
    memory_bytes: int
    disk_bytes: int


class NodeMetricsOut(ResourceMetricsBase):
    node_id: str
    capacity: NodeResourceAmounts = Field(description="The capacity set for the node.")
    allocated: NodeResourceAmounts = Field(description="What the plans of its instances take "
                                               "(stopped ones too).")


def _lines(found: series.Series) -> list[MetricLineOut]:
    return [MetricLineOut(name=line.name, unit=line.unit,  # type: ignore[arg-type]
                    description=line.description, values=line.values)
            for line in found.lines]


def _base(found: series.Series) -> dict:
    return {"window": found.window, "bucket": found.bucket, "resolution": found.resolution,
            "interval_seconds": found.interval_seconds, "times": found.times,
            "series": _lines(found)}


@bp.operation("/projects/<project_id>/instances/<instance_id>/metrics",
              summary="An instance's CPU, memory, network and disk over a window",
              tags=("instances",), query=ResourceMetricsQuery, response=InstanceMetricsOut,
              auth=USER_OR_KEY, errors=(400, 403, 404),
              description="Averages per bucket of the samples taken every "
                          "INSTANCE_METRICS_INTERVAL_SECONDS while the instance runs. "
                          + MISSING + " " + COMBINATIONS + " Any member may read it "
                          "(viewers too); a key needs `instances:read`.")
def instance_metrics(principal: Principal, project_id: str, instance_id: str,
                     query: ResourceMetricsQuery):
    instance, found = series.instance_series(principal, project_id, instance_id,
                                             window=query.window, bucket=query.bucket)
    plan = instance.plan
    return InstanceMetricsOut(
        instance_id=instance.id, **_base(found),
        latest=LatestSampleOut(at=found.latest_at, values=found.latest)
        if found.latest_at and found.latest is not None else None,
        limits=InstanceLimits(vcpus=plan.vcpus, memory_bytes=plan.memory_mb * 2**20,
                              disk_bytes=plan.disk_gb * 2**30))


@bp.operation("/admin/nodes/<node_id>/metrics",
              summary="A node's host load, memory, storage and running instances",
              tags=("admin",), query=ResourceMetricsQuery, response=NodeMetricsOut,
              auth=USER_OR_KEY, errors=(400, 403, 404),
              description="Measured by the engine's resource API (Incus /1.0/resources and "
                          "the storage pool's resources; Docker's info and, for a local "
                          "engine, /proc), beside the capacity and what is allocated. "
                          + MISSING + " " + COMBINATIONS + " Administrators only.")
def node_metrics(principal: Principal, node_id: str, query: ResourceMetricsQuery):
    node, found = series.node_series(principal, node_id, window=query.window,
                                      bucket=query.bucket)
    used = nodes.used_capacity(node)
    return NodeMetricsOut(
        node_id=node.id, **_base(found),
        capacity=NodeResourceAmounts(vcpus=node.capacity_vcpus,
                             memory_bytes=node.capacity_memory_mb * 2**20,
                             disk_bytes=node.capacity_disk_gb * 2**30),
        allocated=NodeResourceAmounts(vcpus=used.vcpus, memory_bytes=used.memory_mb * 2**20,
                              disk_bytes=used.disk_gb * 2**30))
