"""Dashboard metrics: instances running, API requests and spend over a window, in buckets.

Requests to the JSON API made with an API key or an access token are counted in memory
per account and UTC minute (`count_call`, a dict increment under a lock); the
dashboard's own requests (its session cookie, e.g. the live event stream) are not API
requests and are not counted and written by `flush_samples`, which
the scheduler runs every minute (and once more on shutdown) together with a sample of
each account's running instances. Both writes are upserts on (user, minute): a flushed
request count is *added* to the row, the running count *replaces* it, so a re-run or a
second process never counts twice. Samples older than 8 days are deleted by the same
task.

`series` reads one window: one indexed range query over the samples (instances and
requests, bucketed by SQLite) and one over usage records (spend, by the hour each record
bills), then fills every bucket, zeros included, oldest first.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from peewee import EXCLUDED, fn

from appliance import db
from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import Instance, MetricSample, Project, UsageRecord, User
from appliance.services import clock
from appliance.services.billing import billing_state
from appliance.services.principal import Principal

WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1),
           "7d": dt.timedelta(days=7)}
BUCKETS = {"1m": dt.timedelta(minutes=1), "5m": dt.timedelta(minutes=5),
           "1h": dt.timedelta(hours=1)}
MAX_POINTS = 2016  # 7 days in 5-minute buckets
KEEP = dt.timedelta(days=8)
MINUTE = dt.timedelta(minutes=1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# Counting requests -------------------------------------------------------------------

_lock = threading.Lock()
_pending: dict[tuple[str, dt.datetime], int] = {}  # (user id, minute) -> requests


def minute_of(at: dt.datetime) -> dt.datetime:
    return at.astimezone(dt.UTC).replace(second=0, microsecond=0)


# What the "API requests" figure counts: calls made with a key or an access token.
COUNTED_VIA = frozenset({"api_key", "token"})


def count_call(principal: Principal) -> bool:
    """Count the caller's API request when it came with an API key or an access token
    (not the dashboard's session cookie); returns whether it was counted."""
    if principal.via not in COUNTED_VIA:
        return False
    count_request(principal.user.id)
    return True


def count_request(user_id: str, at: dt.datetime | None = None) -> None:
    """Count one API request of the account `user_id` in the minute of `at` (now)."""
    key = (user_id, minute_of(at or clock.now()))
    with _lock:
        _pending[key] = _pending.get(key, 0) + 1


def forget_pending() -> None:
    """Tests: drop counted requests not yet written (each test has its own database)."""
    with _lock:
        _pending.clear()


def _take_pending() -> dict[tuple[str, dt.datetime], int]:
    with _lock:
        batch = dict(_pending)
        _pending.clear()
    return batch


def _give_back(batch: dict[tuple[str, dt.datetime], int]) -> None:
    with _lock:
        for key, count in batch.items():
            _pending[key] = _pending.get(key, 0) + count


def running_now(user_id: str) -> int:
    """The account's instances running now (the project's owner is billed for them)."""
    return (Instance.select().join(Project, on=(Instance.project == Project.id))
            .where(Project.created_by == user_id, Instance.status == "running",
                   Instance.deleted_at.is_null()).count())


def running_by_owner() -> dict[str, int]:
    """Instances with status running per account billed for them (the project's owner)."""
    rows = (Instance.select(Project.created_by, fn.COUNT(Instance.id))
            .join(Project, on=(Instance.project == Project.id))
            .where(Instance.status == "running", Instance.deleted_at.is_null())
            .group_by(Project.created_by).tuples())
    return {owner: count for owner, count in rows}


def flush_samples(now: dt.datetime | None = None) -> dict[str, int]:
    """Write the counted requests and this minute's running instances; purge old samples.

    Idempotent: requests are taken out of memory before they are added to their rows (put
    back when the write fails), and the running count replaces the minute's value.
    Requests of accounts that no longer exist are dropped.
    """
    now = now or clock.now()
    minute = minute_of(now)
    batch = _take_pending()
    try:
        with database.atomic():
            running = running_by_owner()
            user_ids = {user_id for user_id, _ in batch}
            known = {row[0] for row in User.select(User.id)
                     .where(User.id.in_(list(user_ids))).tuples()} if user_ids else set()
            requests = [{"user": user_id, "minute": at, "instances_running": 0,
                         "api_requests": count}
                        for (user_id, at), count in batch.items() if user_id in known]
            if requests:
                (MetricSample.insert_many(requests)
                 .on_conflict(conflict_target=[MetricSample.user, MetricSample.minute],
                              update={MetricSample.api_requests:
                                      MetricSample.api_requests + EXCLUDED.api_requests})
                 .execute())
            samples = [{"user": user_id, "minute": minute, "instances_running": count,
                        "api_requests": 0} for user_id, count in running.items()]
            if samples:
                (MetricSample.insert_many(samples)
                 .on_conflict(conflict_target=[MetricSample.user, MetricSample.minute],
                              update={MetricSample.instances_running:
                                      EXCLUDED.instances_running})
                 .execute())
            purged = MetricSample.delete().where(MetricSample.minute < minute - KEEP).execute()
    except Exception:
        _give_back(batch)
        raise
    return {"requests": len(requests), "running": len(samples), "purged": purged}


# Reading a window --------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    at: dt.datetime
    instances_running: int
    api_requests: int
    spend: int


@dataclass(frozen=True)
class Series:
    window: str
    bucket: str
    currency: str
    points: list[Point]
    running_now: int = 0  # read now, not sampled: a sample may be up to a minute old


def check_window(window: str, bucket: str) -> tuple[dt.timedelta, dt.timedelta]:
    """The window and bucket lengths; 400 naming the field for an unknown value, a bucket
    not smaller than the window, or more than MAX_POINTS buckets."""
    if window not in WINDOWS:
        raise InvalidRequest(f"window is one of {', '.join(WINDOWS)}.", field="window")
    if bucket not in BUCKETS:
        raise InvalidRequest(f"bucket is one of {', '.join(BUCKETS)}.", field="bucket")
    length, step = WINDOWS[window], BUCKETS[bucket]
    if step >= length:
        raise InvalidRequest(f"A {bucket} bucket is not smaller than the {window} window.",
                             field="bucket")
    if length // step > MAX_POINTS:
        raise InvalidRequest(f"{window} in {bucket} buckets is more than {MAX_POINTS} points; "
                             "choose a bigger bucket.", field="bucket")
    return length, step


def series(principal: Principal, window: str = "24h", bucket: str = "5m",
           now: dt.datetime | None = None) -> Series:
    """The caller's account over the last `window` in `bucket`s, oldest first, the current
    (partial) bucket last: the most instances running in a sampled minute, the API
    requests, and the usage billed for hours that start in each bucket.

    Needs `usage:read` on a key (403 otherwise); 400 for a bad window or bucket.
    """
    principal.require_scope("usage:read")
    length, step = check_window(window, bucket)
    now = now or clock.now()
    end = EPOCH + ((now - EPOCH) // step + 1) * step
    start = end - length
    count = length // step
    running, requests, spend = [0] * count, [0] * count, [0] * count
    user_id = principal.user.id

    # Bucketed by the database itself: a week of minutes is 10,080 rows, too many to
    # convert.
    index = ((db.epoch_seconds(MetricSample.minute)
              - int(start.timestamp())) / int(step.total_seconds()))
    buckets = (MetricSample
               .select(index, fn.MAX(MetricSample.instances_running),
                       fn.SUM(MetricSample.api_requests))
               .where(MetricSample.user == user_id, MetricSample.minute >= start,
                      MetricSample.minute < end)
               .group_by(index))
    # Plain values: the cursor's rows as they are, without peewee's per-row work.
    for at, instances, calls in database.execute(buckets).fetchall():
        running[at], requests[at] = instances, calls

    hours = (UsageRecord.select(UsageRecord.hour, fn.SUM(UsageRecord.amount))
             .where(UsageRecord.user == user_id, UsageRecord.hour >= start,
                    UsageRecord.hour < end)
             .group_by(UsageRecord.hour).tuples())
    for hour, amount in hours:
        spend[(UsageRecord.hour.python_value(hour) - start) // step] += amount or 0

    points = [Point(start + i * step, running[i], requests[i], spend[i]) for i in range(count)]
    return Series(window, bucket, billing_state.currency(), points, running_now(user_id))
