"""Dashboard metrics over JSON: the overview charts' numbers for the caller's account."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, Schema
from appliance.services.ops import dashboard_metrics
from appliance.services.principal import Principal

bp = ApiBlueprint("dashboard_api", __name__)


class MetricsQuery(Schema):
    window: Literal["1h", "24h", "7d"] = Field("24h", description="How far back.")
    bucket: Literal["1m", "5m", "1h"] = Field(
        "5m", description="One point per bucket; smaller than the window and at most "
                          f"{dashboard_metrics.MAX_POINTS} points (7d in 1m buckets is not).")


class MetricsPoint(Schema):
    at: dt.datetime = Field(description="Start of the bucket (UTC, aligned to its length).")
    instances_running: int = Field(description="The most running at once (sampled each "
                                               "minute).")
    api_requests: int = Field(description="API requests made with an API key or an access "
                                           "token (the dashboard's own are not counted).")
    spend: int = Field(description="Usage billed for the hours that start in the bucket, "
                                    "in minor units.")


class MetricsOut(Schema):
    window: str
    bucket: str
    currency: str
    instances_running_now: int = Field(description="Running at the time of the request "
                                                   "(the points are sampled each minute).")
    points: list[MetricsPoint]


@bp.operation("/dashboard/metrics", summary="Instances running, API requests and spend "
              "over a window, per bucket", tags=("usage",), query=MetricsQuery,
              response=MetricsOut, auth=USER_OR_KEY,
              description="Every bucket is present (zeros filled), oldest first, the current "
                          "one last. A key needs `usage:read`. 400 naming `bucket` for a "
                          "bucket not smaller than the window or more than "
                          f"{dashboard_metrics.MAX_POINTS} points.")
def metrics(principal: Principal, query: MetricsQuery):
    found = dashboard_metrics.series(principal, query.window, query.bucket)
    return MetricsOut(window=found.window, bucket=found.bucket, currency=found.currency,
                      instances_running_now=found.running_now,
                      points=[MetricsPoint(at=p.at, instances_running=p.instances_running,
                                           api_requests=p.api_requests, spend=p.spend)
                              for p in found.points])
