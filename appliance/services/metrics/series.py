"""Reading metrics over a window: one indexed range read of the finest stored resolution
that fits the bucket and reaches back over the whole window, averaged per bucket.

Windows are 1h, 24h, 7d and 30d; buckets 1m, 5m, 15m, 1h, 6h and 1d, aligned to their
length in UTC (the current, partial bucket last). A bucket is read from the coarsest
stored resolution that divides it and is kept at least as long as the window: 1m
buckets from minute rows (kept 24 h by default), 5m and 15m from 5-minute rows (7 days),
1h and longer from hourly rows (90 days). An impossible combination is a 400 naming
`bucket` (or `window`): a bucket not smaller than the window, more than MAX_POINTS
points, or finer than what is kept for the window (7d in 1m buckets).

Points with no sample (the instance was stopped, not yet made, or the samples are past
their retention) are explicitly missing: `None`, never zero.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from appliance.db import raw_sql
from appliance.errors import InvalidRequest
from appliance.models import Instance, MetricCounter, Node
from appliance.services import clock
from appliance.services.instances import lifecycle, nodes
from appliance.services.metrics import sampling, store
from appliance.services.principal import Principal

WINDOWS = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 6 * 3600, "1d": 86400}
DEFAULT_BUCKET = {"1h": "1m", "24h": "5m", "7d": "1h", "30d": "6h"}
MAX_POINTS = 2016  # 7 days in 5-minute buckets


@dataclass(frozen=True)
class Line:
    name: str
    unit: str  # percent | bytes | bytes_per_second | load | count
    values: list[float | None]
    description: str = ""


@dataclass(frozen=True)
class Series:
    window: str
    bucket: str
    resolution: str  # the stored resolution the buckets were read from
    start: dt.datetime
    times: list[dt.datetime]
    lines: list[Line]
    interval_seconds: int
    latest_at: dt.datetime | None = None  # the newest sample, shown as "now"
    latest: dict[str, float | None] | None = None  # its figures by line name

    def line(self, name: str) -> Line:
        return next(line for line in self.lines if line.name == name)


def check(window: str, bucket: str | None) -> tuple[int, int, int, str]:
    """(window seconds, bucket seconds, stored step, bucket name); 400 naming the field."""
    if window not in WINDOWS:
        raise InvalidRequest(f"window is one of {', '.join(WINDOWS)}.", field="window")
    bucket = bucket or DEFAULT_BUCKET[window]
    if bucket not in BUCKETS:
        raise InvalidRequest(f"bucket is one of {', '.join(BUCKETS)}.", field="bucket")
    length, size = WINDOWS[window], BUCKETS[bucket]
    if size >= length:
        raise InvalidRequest(f"A {bucket} bucket is not smaller than the {window} window.",
                             field="bucket")
    if length // size > MAX_POINTS:
        raise InvalidRequest(f"{window} in {bucket} buckets is more than {MAX_POINTS} "
                             "points; choose a bigger bucket.", field="bucket")
    fitting = [step for step in store.STEPS
               if size % step == 0 and store.retention(step).total_seconds() >= length]
    if not fitting:
        finest = min((step for step in store.STEPS
                      if store.retention(step).total_seconds() >= length), default=None)
        hint = (f"; a {window} window needs buckets of at least {store.STEP_NAMES[finest]}"
                if finest else "")
        raise InvalidRequest(f"{bucket} samples are not kept for {window}{hint}.",
                             field="bucket")
    return length, size, max(fitting), bucket


def _read(table: store.Table, subject: str, window: str, bucket: str | None,
          now: dt.datetime | None) -> tuple[Series, dict[str, list[float | None]]]:
    length, size, step, bucket = check(window, bucket)
    now = now or clock.now()
    end = (store.epoch(now) // size + 1) * size
    start = end - length
    count = length // size
    # Per figure: its sum and the samples of the rows that have it.
    sums = ", ".join(f'SUM("{f}"), SUM(CASE WHEN "{f}" IS NOT NULL THEN '
                     f'"{"nr" if f in table.rates else "n"}" END)' for f in table.fields)
    # Names are the store's constants; values are bound.
    sql = (f'SELECT ("at" - ?) / ?, SUM("n"), {sums} FROM "{table.name}" '  # noqa: S608
           f'WHERE "{table.subject}" = ? AND "step" = ? AND "at" >= ? AND "at" < ? '
           'GROUP BY 1')
    values: dict[str, list[float | None]] = {f: [None] * count for f in table.fields}
    for row in raw_sql(sql, (start, size, subject, step, start, end)).fetchall():
        index, samples = int(row[0]), row[1]
        if not 0 <= index < count or not samples:
            continue
        for position, name in enumerate(table.fields):
            total, present = row[2 + 2 * position], row[3 + 2 * position]
            if present:
                values[name][index] = total / present
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    times = [epoch + dt.timedelta(seconds=start + i * size) for i in range(count)]
    return Series(window, bucket, store.STEP_NAMES[step],
                  epoch + dt.timedelta(seconds=start), times, [],
                  sampling.interval_seconds()), values


def _rounded(values: list[float | None], scale: float = 1.0,
             digits: int = 0) -> list[float | None]:
    return [None if v is None else (round(v * scale, digits) if digits else round(v * scale))
            for v in values]


def instance_series(principal: Principal, project_id: str, instance_id: str, *,
                    window: str = "24h", bucket: str | None = None,
                    now: dt.datetime | None = None) -> tuple[Instance, Series]:
    """The instance's CPU, memory, network and disk over `window` (any member, viewers
    too; a key needs instances:read; another tenant's instance is 404)."""
    instance = lifecycle.get_instance(principal, project_id, instance_id)
    series, values = _read(store.INSTANCES, instance.id, window, bucket, now)
    lines = [
        Line("cpu", "percent", _rounded(values["cpu"], 0.01, 2),
             "CPU used, in percent of the plan's vCPUs (100 = all of them busy)."),
        Line("memory", "bytes", _rounded(values["memory"]), "Memory used."),
        Line("network_rx", "bytes_per_second", _rounded(values["rx"]),
             "Bytes received per second, all interfaces."),
        Line("network_tx", "bytes_per_second", _rounded(values["tx"]),
             "Bytes sent per second, all interfaces."),
        Line("disk", "bytes", _rounded(values["disk"]),
             "Disk used (missing where the engine's storage does not report it)."),
    ]
    latest_at, latest = _latest_of(instance)
    return instance, Series(**{**series.__dict__, "lines": lines, "latest_at": latest_at,
                               "latest": latest})


def _latest_of(instance: Instance) -> tuple[dt.datetime | None, dict | None]:
    """The instance's newest sample, while it runs (a stopped one's would be stale)."""
    row = MetricCounter.get_or_none(MetricCounter.instance == instance.id)
    if row is None or instance.status != "running":
        return None, None
    return dt.datetime.fromtimestamp(row.read_at, dt.UTC), {
        "cpu": None if row.cpu is None else round(row.cpu / 100, 2), "memory": row.memory,
        "network_rx": row.rx, "network_tx": row.tx, "disk": row.disk}


def node_series(principal: Principal, node_id: str, *, window: str = "24h",
                bucket: str | None = None, now: dt.datetime | None = None
                ) -> tuple[Node, Series]:
    """The node's host figures over `window` (administrators only)."""
    node = nodes.get_node(principal, node_id)
    series, values = _read(store.NODES, node.id, window, bucket, now)
    lines = [
        Line("load", "load", _rounded(values["load"], 0.01, 2),
             "1-minute load average of the host."),
        Line("memory_used", "bytes", _rounded(values["memory_used"]), "Host memory in use."),
        Line("memory_total", "bytes", _rounded(values["memory_total"]), "Host memory."),
        Line("storage_used", "bytes", _rounded(values["storage_used"]),
             "Used space of the storage pool (Docker: of its root directory's file system)."),
        Line("storage_total", "bytes", _rounded(values["storage_total"]),
             "Size of the storage pool."),
        Line("instances_running", "count", _rounded(values["running"], 1, 1),
             "Instances running on the engine (the appliance's and any other)."),
    ]
    return node, Series(**{**series.__dict__, "lines": lines})


# Names are the store's constants; the node's id is bound.
_NODE_COLUMNS = ", ".join(f'"{name}"' for name in store.NODES.fields)
LATEST_SQL = (f'SELECT "at", "n", {_NODE_COLUMNS} '  # noqa: S608
              'FROM "node_metric" WHERE "node_id" = ? AND "step" = 60 '
              'ORDER BY "at" DESC LIMIT 1')


@dataclass(frozen=True)
class Latest:
    node: Node
    at: dt.datetime | None
    figures: dict[str, int | None]


def latest_of(node: Node) -> Latest:
    """The node's newest minute row, averaged (what /metrics and the node page show as
    "now"); figures None before its first sample."""
    row = raw_sql(LATEST_SQL, (node.id,)).fetchone()
    if row is None:
        return Latest(node, None, dict.fromkeys(store.NODES.fields))
    samples = row[1] or 1
    figures = {name: None if value is None else int(value / samples)
               for name, value in zip(store.NODES.fields, row[2:], strict=True)}
    return Latest(node, dt.datetime.fromtimestamp(row[0], dt.UTC), figures)


def latest_by_node() -> list[Latest]:
    """Every node's latest_of, by name."""
    return [latest_of(node) for node in list(Node.select().order_by(Node.name))]


