"""The overview page's figures: the billing cards (balance, run-out, month to date,
instances) and the activity charts - instances running, API requests and spend over the
last hour, day or week, drawn by web/charts.py from `services.ops.dashboard_metrics`.
The billing pages show the run-out the same way (`run_out_text`)."""

from __future__ import annotations

import datetime as dt

from appliance.services import money
from appliance.services.billing import prepaid, usage
from appliance.services.ops import dashboard_metrics
from appliance.services.principal import Principal
from appliance.web import charts

# Small charts sit three abreast on a desktop and one per row on a phone; one geometry
# fits both (about 11-12 px text at 300-340 px wide).
SMALL = charts.Size(320, 170, 12, 4)
WINDOW_CHOICES = (("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days"))
DEFAULT_WINDOW = "24h"
# Few enough bars to tell apart on a phone: 60, 24 and 168.
BUCKET_OF_WINDOW = {"1h": "1m", "24h": "1h", "7d": "1h"}


def window_of(value: str | None) -> str:
    """The window asked for, or the default for anything unknown (a page never 400s)."""
    return value if value in BUCKET_OF_WINDOW else DEFAULT_WINDOW


def _x_label(window: str):
    if window == "7d":
        return lambda at: f"{at.day} {at:%b}"
    return lambda at: f"{at:%H:%M}"


def _when(at: dt.datetime) -> str:
    return f"{at:%a} {at.day} {at:%b} {at:%H:%M} UTC"


def _count(value: int) -> str:
    return f"{value:,}"


def activity(principal: Principal, window: str) -> dict:
    """The template context of the three charts for `window` (1h, 24h or 7d)."""
    found = dashboard_metrics.series(principal, window, BUCKET_OF_WINDOW[window])
    currency = found.currency
    label = _x_label(window)
    running = [(p.at, p.instances_running) for p in found.points]
    most = max(found.running_now, *(v for _, v in running))
    calls = [(p.at, p.api_requests) for p in found.points]
    spend = [(p.at, p.spend) for p in found.points]
    return {
        "window": window, "window_choices": WINDOW_CHOICES,
        "window_label": dict(WINDOW_CHOICES)[window],
        "activity_charts": [
            {"id": "chart-instances", "title": "Instances running",
             "figure": _count(found.running_now), "note": f"now, at most {most:,}",
             "chart": charts.series_chart(
                 running, SMALL, axis_label=_count, x_label=label,
                 tooltip=lambda at, v: f"{_when(at)}: at most {v:,} running")},
            {"id": "chart-requests", "title": "API requests",
             "figure": _count(sum(v for _, v in calls)), "note": "by API keys and tokens",
             "chart": charts.series_chart(
                 calls, SMALL, axis_label=_count, x_label=label,
                 tooltip=lambda at, v: f"{_when(at)}: {v:,} requests")},
            {"id": "chart-spend", "title": "Spend",
             "figure": money.format(sum(v for _, v in spend), currency),
             "note": "in all",
             "chart": charts.series_chart(
                 spend, SMALL, axis_label=lambda v: charts.axis_amount(v, currency),
                 x_label=label, currency=currency,
                 empty_step=10 ** money.exponent(currency),
                 tooltip=lambda at, v: f"{_when(at)}: {money.format(v, currency)}")},
        ],
    }


def run_out_text(hours: float | None, beyond: bool = False) -> str | None:
    """"about 18 h" under two days, else "about 5 days", "more than 10 years" past the
    projection's horizon; None when nothing burns."""
    if beyond:
        return prepaid.RUN_OUT_HORIZON_TEXT
    if hours is None:
        return None
    if hours < 1:
        return "less than an hour"
    if hours < 48:
        return f"about {round(hours)} h"
    return f"about {round(hours / 24)} days"


def overview_cards(principal: Principal) -> dict:
    """The dashboard home's billing cards: balance and run-out, month to date, instances."""
    found = prepaid.overview(principal)
    summary = usage.summary(principal)
    return {"billing_cards": {
        "billing": found,
        "run_out": run_out_text(found.hours_left, found.run_out_beyond_horizon),
        "instances": summary["active_instances"],
        "instances_running": summary["running_instances"],
        "money": lambda minor: money.format(minor, found.currency)}}
