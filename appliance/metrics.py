"""Prometheus metrics: request counts and latencies by route, method and status, and
per-node gauges (host load, memory, storage, instances running; capacity and allocated)
read at scrape time from the newest node sample (services/metrics). No per-instance
series: the number of series grows with the nodes only.

Each app has its own registry (tests build many apps in one process). `GET /metrics`
serves it in the Prometheus text format; when `METRICS_TOKEN` is set it needs
`Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import time

from flask import Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from appliance import http
from appliance.errors import Unauthorized
from appliance.services.instances import nodes
from appliance.services.metrics import series

# Gauge name, help, and the figure of the newest node sample it shows (scale).
NODE_GAUGES = (
    ("appliance_node_load1", "1-minute load average of the node's host.", "load", 0.01),
    ("appliance_node_memory_used_bytes", "Host memory in use.", "memory_used", 1),
    ("appliance_node_memory_total_bytes", "Host memory.", "memory_total", 1),
    ("appliance_node_storage_used_bytes", "Used space of the node's storage pool.",
     "storage_used", 1),
    ("appliance_node_storage_total_bytes", "Size of the node's storage pool.",
     "storage_total", 1),
    ("appliance_node_instances_running", "Instances running on the node's engine.",
     "running", 1),
)

UNMATCHED = "<unmatched>"


class RequestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "appliance_http_requests_total", "HTTP requests handled.",
            ("route", "method", "status"), registry=self.registry)
        self.latency = Histogram(
            "appliance_http_request_duration_seconds", "Time to handle an HTTP request.",
            ("route", "method"), registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

        # labels() hashes and locks on every call; the children are looked up once.
        self._children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def _child(self, route: str, method: str, status: str) -> tuple[Counter, Histogram]:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (self.requests.labels(route, method, status),
                                           self.latency.labels(route, method))
        return child

    def start(self) -> None:
        g.metrics_started = time.perf_counter()

    def finish(self, response: Response) -> Response:
        started = g.pop("metrics_started", None)
        if started is not None:
            req = request._get_current_object()  # one proxy lookup instead of three
            route = req.url_rule.rule if req.url_rule is not None else UNMATCHED
            count, latency = self._child(route, req.method, str(response.status_code))
            count.inc()
            latency.observe(time.perf_counter() - started)
        return response


class NodeCollector(Collector):
    """The node gauges, from the database at each scrape (one small query per node)."""

    def collect(self):
        latest = series.latest_by_node()
        families = {name: GaugeMetricFamily(name, text, labels=["node"])
                    for name, text, _, _ in NODE_GAUGES}
        sized = [GaugeMetricFamily(f"appliance_node_{kind}_{what}",
                                   f"{kind.title()} {what.replace('_', ' ')} of the node.",
                                   labels=["node"])
                 for kind in ("capacity", "allocated")
                 for what in ("vcpus", "memory_bytes", "disk_bytes")]
        for found in latest:
            for name, _, figure, scale in NODE_GAUGES:
                value = found.figures.get(figure)
                if value is not None:
                    families[name].add_metric([found.node.name], value * scale)
            used = nodes.used_capacity(found.node)
            values = (found.node.capacity_vcpus, found.node.capacity_memory_mb * 2**20,
                      found.node.capacity_disk_gb * 2**30,
                      used.vcpus, used.memory_mb * 2**20, used.disk_gb * 2**30)
            for family, value in zip(sized, values, strict=True):
                family.add_metric([found.node.name], value)
        yield from families.values()
        yield from sized

    def describe(self):
        return []  # collected at scrape time only (the registry must not call collect())


def serve_metrics() -> Response:
    token = current_app.config["APPLIANCE"]["METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("GET /metrics needs the metrics bearer token.")
    registry = current_app.extensions["appliance_metrics"].registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                    headers={"Content-Type": CONTENT_TYPE_LATEST})


def init_app(app: Flask) -> None:
    metrics = RequestMetrics()
    metrics.registry.register(NodeCollector())
    app.extensions["appliance_metrics"] = metrics
    http.add_hooks(app, metrics.start, metrics.finish, outermost=True)  # the timer wraps all
    app.add_url_rule("/metrics", "metrics", serve_metrics, methods=["GET"])
