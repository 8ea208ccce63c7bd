"""Resource metrics on the simulated engine: the sampling tick, rates from counters, the
rollups and their purge with the clock moved, and the metrics API (instances: members
and viewers, another tenant 404, impossible combinations 400; nodes: administrators),
and the node gauges of /metrics. The real engines are in test_metrics_engines.py."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from appliance import scheduler
from appliance.drivers.base import Sample
from appliance.models import InstanceMetric, MetricCounter
from appliance.services import clock
from appliance.services.metrics import sampling, store
from tests.factories import api, create_instance, run_jobs

MINUTE = dt.timedelta(minutes=1)


@pytest.fixture
def instance(app, client, owner, owner_project, catalog) -> dict:
    return create_instance(app, client, owner, owner_project, catalog, name="mtx-web")


def metrics_of(client, headers, project_id: str, instance_id: str, **query):
    args = "&".join(f"{k}={v}" for k, v in query.items())
    return api(client, "GET", f"/projects/{project_id}/instances/{instance_id}/metrics?{args}",
               headers)


def line(body: dict, name: str) -> list:
    return next(s for s in body["series"] if s["name"] == name)["values"]


# Rates from counters ------------------------------------------------------------------


def base(read_at: float, cpu: float, rx: int = 0, tx: int = 0):
    return SimpleNamespace(read_at=read_at, cpu_seconds=cpu, rx_bytes=rx, tx_bytes=tx)


def test_cpu_is_a_percent_of_the_plans_vcpus_between_two_readings():
    sample = Sample(110.0, cpu_seconds=15.0, memory_bytes=5, rx_bytes=3000, tx_bytes=1000)
    one = sampling.figures(sample, base(100.0, 10.0, 1000, 0), vcpus=1, gap_seconds=180)
    assert (one["cpu"], one["rx"], one["tx"], one["memory"]) == (5000, 200, 100, 5)
    two = sampling.figures(sample, base(100.0, 10.0), vcpus=2, gap_seconds=180)
    assert two["cpu"] == 2500  # hundredths of a percent: a quarter of two vCPUs


def test_no_rate_across_a_restart_a_long_gap_or_without_a_base():
    sample = Sample(110.0, cpu_seconds=1.0, memory_bytes=7, rx_bytes=10, tx_bytes=10)
    reset = sampling.figures(sample, base(100.0, 50.0, 99, 99), vcpus=1, gap_seconds=180)
    gap = sampling.figures(sample, base(-1000.0, 0.5), vcpus=1, gap_seconds=180)
    first = sampling.figures(sample, None, vcpus=1, gap_seconds=180)
    for figures in (reset, gap, first):
        assert (figures["cpu"], figures["rx"], figures["tx"]) == (None, None, None)
        assert figures["memory"] == 7  # a level needs no base


# The tick on the fake engine ----------------------------------------------------------


def test_the_tick_samples_running_instances_and_skips_stopped_ones(  # noqa: PLR0917
        app, client, owner, owner_project, instance, catalog):
    first = scheduler.run_task(app, "sample_resources")
    assert (first["instances"], first["nodes"], first["failed_nodes"]) == (1, 1, 0)
    clock.advance(MINUTE)
    scheduler.run_task(app, "sample_resources")
    body = metrics_of(client, owner, owner_project, instance["id"], window="1h").get_json()
    assert (body["window"], body["bucket"], body["resolution"]) == ("1h", "1m", "1m")
    assert len(body["times"]) == 60 and body["missing"] == "null"
    assert {s["name"]: s["unit"] for s in body["series"]} == {
        "cpu": "percent", "memory": "bytes", "network_rx": "bytes_per_second",
        "network_tx": "bytes_per_second", "disk": "bytes"}
    cpu = line(body, "cpu")
    assert cpu[-1] is not None and 0 < cpu[-1] <= 100
    assert cpu[-2] is None  # the first sample set the base only: no rate for its minute
    memory = line(body, "memory")
    assert 0 < memory[-1] <= body["limits"]["memory_bytes"] and memory[-2] > 0
    assert all(v is None for v in cpu[:-2])  # never sampled: missing, not zero
    assert body["limits"] == {"vcpus": 1, "memory_bytes": 512 * 2**20,
                              "disk_bytes": 10 * 2**30}
    assert body["latest"]["values"]["cpu"] == pytest.approx(cpu[-1], abs=0.01)

    stopped = api(client, "POST", f"/projects/{owner_project}/instances/{instance['id']}/stop",
                  owner)
    assert stopped.status_code == 202
    run_jobs(app)
    assert scheduler.run_task(app, "sample_resources")["instances"] == 0
    after = metrics_of(client, owner, owner_project, instance["id"], window="1h").get_json()
    assert after["latest"] is None


def test_a_node_that_fails_is_skipped_and_the_others_written(app, instance, monkeypatch):
    from appliance.drivers.fake import FakeDriver
    from appliance.errors import DriverError

    def down(self, refs):
        raise DriverError("the simulated engine is down")

    monkeypatch.setattr(FakeDriver, "metrics", down)
    result = scheduler.run_task(app, "sample_resources")
    assert (result["failed_nodes"], result["instances"]) == (1, 0)


# Rollups with the clock moved ---------------------------------------------------------


def cpu_at(at: dt.datetime) -> int:
    """A known CPU figure (hundredths of a percent): 10 % in even hours, 30 % in odd."""
    return 1000 if at.hour % 2 == 0 else 3000


def eight_days_of_samples(app, instance_id: str, end: dt.datetime) -> None:
    start = end - dt.timedelta(days=8)
    with app.app_context():
        from appliance.db import database
        at = start
        while at <= end:
            batch = []
            with database.atomic():
                for _ in range(1440):
                    if at > end:
                        break
                    batch.append(at)
                    at += MINUTE
                for when in batch:
                    store.add(store.INSTANCES, [(instance_id, {
                        "cpu": cpu_at(when), "memory": 100 * 2**20, "rx": 10, "tx": 20,
                        "disk": None})], when)


def rows_per_step(app, instance_id: str) -> dict[int, int]:
    with app.app_context():
        return {step: InstanceMetric.select().where(InstanceMetric.instance == instance_id,
                                                    InstanceMetric.step == step).count()
                for step in store.STEPS}


def test_eight_days_of_samples_give_the_documented_resolution_per_window(
        app, client, owner, owner_project, instance):
    end = clock.now().replace(second=0, microsecond=0)  # an access token is valid now
    clock.freeze(end)
    eight_days_of_samples(app, instance["id"], end)

    def window(name, bucket=None, count=None, resolution=None):
        query = {"window": name} | ({"bucket": bucket} if bucket else {})
        response = metrics_of(client, owner, owner_project, instance["id"], **query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert (len(body["times"]), body["resolution"]) == (count, resolution), name
        return body

    hour = window("1h", count=60, resolution="1m")
    assert all(v is not None for v in line(hour, "cpu"))
    day = window("24h", "1m", count=1440, resolution="1m")
    assert all(v is not None for v in line(day, "cpu"))
    assert line(day, "disk") == [None] * 1440  # not reported: missing, never zero
    week = window("7d", "5m", count=2016, resolution="5m")
    assert all(v is not None for v in line(week, "cpu"))
    by_hour = window("7d", count=168, resolution="1h")
    for at, value in zip(by_hour["times"], line(by_hour, "cpu"), strict=True):
        hour_start = dt.datetime.fromisoformat(at.replace("Z", "+00:00"))
        assert value == cpu_at(hour_start) / 100  # the hourly rollup is the hour's average
    month = window("30d", "1h", count=720, resolution="1h")
    filled = [v for v in line(month, "cpu") if v is not None]
    assert 8 * 24 <= len(filled) <= 8 * 24 + 1  # eight days of hours, the rest missing
    assert line(month, "cpu")[: 720 - 8 * 24 - 1] == [None] * (720 - 8 * 24 - 1)
    six = window("30d", count=120, resolution="1h")
    assert line(six, "memory")[-1] == 100 * 2**20

    # The purge keeps each resolution to its retention: minute rows a day, 5-minute a week.
    before = rows_per_step(app, instance["id"])
    assert before == {60: 8 * 1440 + 1, 300: 8 * 288 + 1, 3600: 8 * 24 + 1}
    scheduler.run_task(app, "purge_old_metrics")
    after = rows_per_step(app, instance["id"])
    assert 1440 <= after[60] <= 1442 and 2016 <= after[300] <= 2018
    assert after[3600] == before[3600]  # hourly rows are kept 90 days
    assert window("24h", "1m", count=1440, resolution="1m")  # the window is still whole

    # Days later the table is no bigger: old rows go as new ones come.
    clock.freeze(end + dt.timedelta(days=3))
    eight_days_of_samples(app, instance["id"], end + dt.timedelta(days=3))
    scheduler.run_task(app, "purge_old_metrics")
    later = rows_per_step(app, instance["id"])
    assert (later[60], later[300]) == (after[60], after[300])
    clock.freeze(end + dt.timedelta(days=100))
    scheduler.run_task(app, "purge_old_metrics")
    assert rows_per_step(app, instance["id"]) == {60: 0, 300: 0, 3600: 0}


def test_a_window_needs_buckets_the_retention_keeps(make_app, data_dir):
    app = make_app(INSTANCE_METRICS_MINUTE_HOURS=12)
    with app.app_context():
        from appliance.errors import InvalidRequest
        from appliance.services.metrics import series

        assert series.check("1h", "1m")[2] == 60
        with pytest.raises(InvalidRequest) as refused:
            series.check("24h", "1m")
        assert refused.value.details["field"] == "bucket" and "not kept" in refused.value.message
        assert series.check("24h", "5m")[2] == 300


# The API ------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "field"), [
    ({"window": "2d"}, "window"), ({"window": "1h", "bucket": "3m"}, "bucket"),
    ({"window": "1h", "bucket": "1h"}, "bucket"), ({"window": "24h", "bucket": "1d"}, "bucket"),
    ({"window": "7d", "bucket": "1m"}, "bucket"), ({"window": "30d", "bucket": "5m"}, "bucket"),
])
def test_impossible_combinations_are_400_naming_the_field(  # noqa: PLR0917
        client, owner, owner_project, instance, query, field):
    response = metrics_of(client, owner, owner_project, instance["id"], **query)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request" and error["details"]["field"] == field


def test_a_viewer_reads_metrics_and_another_tenant_gets_404(  # noqa: PLR0917
        client, owner, viewer, outsider, owner_project, instance):
    assert metrics_of(client, viewer, owner_project, instance["id"]).status_code == 200
    assert metrics_of(client, outsider, owner_project, instance["id"]).status_code == 404
    assert metrics_of(client, owner, owner_project, "ins_nope").status_code == 404


def test_node_metrics_are_for_administrators(  # noqa: PLR0917
        app, client, admin, owner, catalog, instance):
    scheduler.run_task(app, "sample_resources")
    path = f"/admin/nodes/{catalog['node']}/metrics?window=1h"
    assert api(client, "GET", path, owner).status_code == 403
    body = api(client, "GET", path, admin).get_json()
    assert line(body, "instances_running")[-1] == 1
    assert line(body, "memory_total")[-1] == 64 * 2**30
    assert body["allocated"]["vcpus"] == 1 and body["capacity"]["vcpus"] == 64
    assert api(client, "GET", "/admin/nodes/node_nope/metrics", admin).status_code == 404


def test_prometheus_has_node_gauges_and_no_instance_series(app, client, catalog, instance):
    scheduler.run_task(app, "sample_resources")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'appliance_node_instances_running{node="fake"} 1.0' in text
    assert 'appliance_node_memory_total_bytes{node="fake"}' in text
    assert 'appliance_node_capacity_vcpus{node="fake"} 64.0' in text
    assert 'appliance_node_allocated_vcpus{node="fake"} 1.0' in text
    assert instance["id"] not in text


def test_counters_are_kept_per_instance(app, instance):
    scheduler.run_task(app, "sample_resources")
    with app.app_context():
        row = MetricCounter.get(MetricCounter.instance == instance["id"])
        assert row.cpu_seconds is not None and row.memory > 0


# The engines' answers, read -----------------------------------------------------------


def test_incus_state_and_resources_are_read_as_incus_reports_them():
    from appliance.drivers.incus import metrics as incus

    sample = incus.reading({
        "cpu": {"usage": 2_500_000_000}, "memory": {"usage": 1000, "total": 4096},
        "network": {"lo": {"counters": {"bytes_received": 9, "bytes_sent": 9}},
                    "eth0": {"counters": {"bytes_received": 100, "bytes_sent": 50}},
                    "eth1": {"counters": {"bytes_received": 1, "bytes_sent": 2}}},
        "disk": {}}, 12.0)
    assert (sample.cpu_seconds, sample.memory_bytes, sample.memory_limit_bytes) == (2.5, 1000,
                                                                                    4096)
    assert (sample.rx_bytes, sample.tx_bytes, sample.disk_bytes) == (101, 52, None)
    assert incus._load1({"Average1Min": 0.5, "Average5Min": 1}) == 0.5
    assert incus._load1({"average1min": 0.25}) == 0.25 and incus._load1({}) is None


@pytest.mark.parametrize("cache_key", ["inactive_file", "total_inactive_file"])  # v2, v1
def test_docker_stats_are_read_as_docker_stats_shows_them(cache_key):
    from appliance.drivers.docker import metrics as docker_metrics

    sample = docker_metrics.reading({
        "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}},
        "memory_stats": {"usage": 10_000, "limit": 20_000, "stats": {cache_key: 4_000}},
        "networks": {"eth0": {"rx_bytes": 7, "tx_bytes": 8},
                     "eth1": {"rx_bytes": 1, "tx_bytes": 1}}}, 42, 5.0)
    assert (sample.cpu_seconds, sample.memory_bytes, sample.memory_limit_bytes) == (
        3.0, 6_000, 20_000)
    assert (sample.rx_bytes, sample.tx_bytes, sample.disk_bytes) == (8, 9, 42)
    empty = docker_metrics.reading({}, None, 5.0)
    assert (empty.cpu_seconds, empty.memory_bytes, empty.rx_bytes) == (None, None, None)
