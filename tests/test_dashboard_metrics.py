"""Dashboard metrics: API requests counted per account and minute, running instances
sampled each minute, spend from usage records, read back in zero-filled buckets."""

from __future__ import annotations

import datetime as dt

import pytest

from appliance import scheduler
from appliance.db import database
from appliance.models import MetricSample, UsageRecord
from appliance.services import clock
from appliance.services.ops import dashboard_metrics
from tests.factories import (
    api,
    bearer,
    create_instance,
    create_key,
    default_project,
    default_project_of,
    fake_catalog,
    key_auth,
    login,
    make_user,
    run_jobs,
)

T0 = dt.datetime(2025, 3, 10, 12, 30, 20, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def people(app, client):
    clock.freeze(T0)
    found = {}
    for who in ("owner", "outsider"):
        user = make_user(app, f"{who}@example.test")
        # Keys rather than 15-minute access tokens: the tests move the clock by hours.
        secret, _ = create_key(client, bearer(login(client, f"{who}@example.test")),
                               ["usage:read", "instances:read", "instances:write"])
        found[who], found[f"{who}_id"] = key_auth(secret), user.id
    dashboard_metrics.forget_pending()  # the set-up's own requests
    return found


def samples(app, user_id: str) -> dict[dt.datetime, tuple[int, int]]:
    with app.app_context(), database.connection_context():
        return {row.minute: (row.instances_running, row.api_requests)
                for row in MetricSample.select().where(MetricSample.user == user_id)}


def metrics(client, auth, query: str = ""):
    response = api(client, "GET", f"/dashboard/metrics{query}", auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def add_usage(app, user_id: str, hour: dt.datetime, amount: int) -> None:
    with app.app_context(), database.connection_context():
        project = default_project_of(user_id)
        UsageRecord.create(user=user_id, project=project, subject_id=f"ins_{user_id}",
                           resource="instance", sku="small", hour=hour, quantity=1,
                           unit_price=amount, amount=amount, created_at=clock.now())


def test_requests_are_counted_and_flushed_into_their_minute_and_account(app, client, people):
    for _ in range(3):
        api(client, "GET", "/projects", people["owner"])
    clock.advance(MINUTE)
    api(client, "GET", "/projects", people["owner"])
    api(client, "GET", "/nowhere-at-all", people["owner"])  # no principal: not counted
    client.get("/api/v1/projects")  # anonymous: 401, not counted
    assert samples(app, people["owner_id"]) == {}  # nothing written per request
    scheduler.run_task(app, "sample_metrics")
    first = T0.replace(second=0)
    assert samples(app, people["owner_id"]) == {first: (0, 3), first + MINUTE: (0, 1)}
    assert samples(app, people["outsider_id"]) == {}
    # A second flush (or a second process) adds only what was counted since.
    api(client, "GET", "/projects", people["owner"])
    scheduler.run_task(app, "sample_metrics")
    scheduler.run_task(app, "sample_metrics")
    assert samples(app, people["owner_id"])[first + MINUTE] == (0, 2)


def test_a_failed_flush_keeps_the_counts_for_the_next(app, client, people, monkeypatch):
    api(client, "GET", "/projects", people["owner"])

    def broken():
        raise RuntimeError("database is locked")

    monkeypatch.setattr(dashboard_metrics, "running_by_owner", broken)
    with pytest.raises(RuntimeError):
        scheduler.run_task(app, "sample_metrics")
    monkeypatch.undo()
    scheduler.run_task(app, "sample_metrics")
    assert samples(app, people["owner_id"]) == {T0.replace(second=0): (0, 1)}


def test_running_instances_are_sampled_per_owner(app, client, people):
    catalog = fake_catalog(app)
    project = default_project(client, people["owner"])
    create_instance(app, client, people["owner"], project, catalog, name="web-1")
    create_instance(app, client, people["owner"], project, catalog, name="web-2")
    stopped = create_instance(app, client, people["owner"], project, catalog, name="web-3")
    assert api(client, "POST", f"/projects/{project}/instances/{stopped['id']}/stop",
               people["owner"]).status_code == 202
    run_jobs(app)
    dashboard_metrics.forget_pending()
    scheduler.run_task(app, "sample_metrics")
    assert samples(app, people["owner_id"]) == {T0.replace(second=0): (2, 0)}
    assert samples(app, people["outsider_id"]) == {}
    body = metrics(client, people["owner"], "?window=1h&bucket=5m")
    assert body["points"][-1]["instances_running"] == 2
    assert body["points"][-2]["instances_running"] == 0
    assert api(client, "GET", "/dashboard/metrics", people["outsider"]).get_json()[
        "points"][-1]["instances_running"] == 0


def test_buckets_are_aligned_zero_filled_and_oldest_first(app, client, people):
    body = metrics(client, people["owner"])
    assert (body["window"], body["bucket"], body["currency"]) == ("24h", "5m", "EUR")
    points = body["points"]
    assert len(points) == 288
    # The current bucket (12:30-12:35) is last; the first started 24 h before it ended.
    assert points[-1]["at"] == "2025-03-10T12:30:00Z"
    assert points[0]["at"] == "2025-03-09T12:35:00Z"
    assert all(p["instances_running"] == p["api_requests"] == p["spend"] == 0
               for p in points)
    hourly = metrics(client, people["owner"], "?window=7d&bucket=1h")["points"]
    assert len(hourly) == 168 and hourly[-1]["at"] == "2025-03-10T12:00:00Z"
    minutes = metrics(client, people["owner"], "?window=1h&bucket=1m")["points"]
    assert len(minutes) == 60 and minutes[-1]["at"] == "2025-03-10T12:30:00Z"


def test_max_of_running_and_sum_of_requests_per_bucket(app, client, people):
    start = T0.replace(minute=25, second=0)  # a 5-minute bucket: 12:25-12:30
    with app.app_context(), database.connection_context():
        for offset, running, calls in ((0, 1, 4), (2, 3, 5), (4, 2, 1)):
            MetricSample.create(user=people["owner_id"], minute=start + offset * MINUTE,
                                instances_running=running, api_requests=calls)
        MetricSample.create(user=people["outsider_id"], minute=start, instances_running=9,
                            api_requests=99)
    points = metrics(client, people["owner"], "?window=1h&bucket=5m")["points"]
    assert points[-2]["at"] == "2025-03-10T12:25:00Z"
    assert (points[-2]["instances_running"], points[-2]["api_requests"]) == (3, 10)


def test_spend_lands_in_the_bucket_of_its_hour(app, client, people):
    add_usage(app, people["owner_id"], dt.datetime(2025, 3, 10, 11, tzinfo=dt.UTC), 40)
    add_usage(app, people["owner_id"], dt.datetime(2025, 3, 10, 12, tzinfo=dt.UTC), 25)
    add_usage(app, people["owner_id"], dt.datetime(2025, 3, 9, 9, tzinfo=dt.UTC), 7)
    add_usage(app, people["outsider_id"], dt.datetime(2025, 3, 10, 12, tzinfo=dt.UTC), 1000)
    hourly = {p["at"]: p["spend"] for p in
              metrics(client, people["owner"], "?window=24h&bucket=1h")["points"]}
    assert hourly["2025-03-10T11:00:00Z"] == 40
    assert hourly["2025-03-10T12:00:00Z"] == 25
    assert sum(hourly.values()) == 65  # 9:00 yesterday is outside the 24 h
    fine = {p["at"]: p["spend"] for p in metrics(client, people["owner"])["points"]}
    assert fine["2025-03-10T12:00:00Z"] == 25 and fine["2025-03-10T12:05:00Z"] == 0
    week = metrics(client, people["owner"], "?window=7d&bucket=1h")["points"]
    assert sum(p["spend"] for p in week) == 72


@pytest.mark.parametrize("query, field", [
    ("?window=2h", "window"), ("?bucket=10m", "bucket"), ("?window=1h&bucket=1h", "bucket"),
    ("?window=7d&bucket=1m", "bucket"), ("?window=", "window")])
def test_bad_window_or_bucket_is_400_naming_the_field(client, people, query, field):
    response = api(client, "GET", f"/dashboard/metrics{query}", people["owner"])
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_the_biggest_allowed_combination_is_2016_points(client, people):
    assert len(metrics(client, people["owner"], "?window=7d&bucket=5m")["points"]) == 2016


def test_a_key_without_usage_read_is_403(client, people):
    secret, _ = create_key(client, bearer(login(client, "owner@example.test")),
                           ["instances:read"])
    response = api(client, "GET", "/dashboard/metrics", key_auth(secret))
    assert response.status_code == 403


def test_a_signed_in_user_reads_their_metrics_with_an_access_token(client, people):
    auth = bearer(login(client, "owner@example.test"))
    assert len(metrics(client, auth, "?window=1h&bucket=1m")["points"]) == 60


def test_samples_older_than_eight_days_are_purged(app, people):
    with app.app_context(), database.connection_context():
        for age in (dt.timedelta(days=9), dt.timedelta(days=7)):
            MetricSample.create(user=people["owner_id"], minute=T0.replace(second=0) - age,
                                instances_running=1, api_requests=1)
    assert scheduler.run_task(app, "sample_metrics")["purged"] == 1
    assert len(samples(app, people["owner_id"])) == 1


def test_requests_of_a_vanished_account_are_dropped(app, people):
    dashboard_metrics.count_request("usr_gone")
    assert scheduler.run_task(app, "sample_metrics")["requests"] == 0


def test_stopping_the_scheduler_flushes_the_counted_requests(app, client, people):
    api(client, "GET", "/projects", people["owner"])
    scheduler.stop(app)
    assert samples(app, people["owner_id"]) == {T0.replace(second=0): (0, 1)}
