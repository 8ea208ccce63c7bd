"""The dashboard overview's activity charts: instances running, API requests and spend,
with a 1 h / 24 h / 7 d switch that htmx swaps in place and that works as plain links."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from appliance.db import database
from appliance.models import MetricSample, UsageRecord
from appliance.services import clock
from tests.factories import T0, Browser, default_project_of, make_user

CHART_IDS = ("chart-instances", "chart-requests", "chart-spend")


@pytest.fixture
def ada(app):
    clock.freeze(T0)
    user = make_user(app, "ada@example.test")
    eve = make_user(app, "eve@example.test")
    minute = T0.replace(second=0, microsecond=0)
    with app.app_context(), database.connection_context():
        MetricSample.create(user=user.id, minute=minute - dt.timedelta(minutes=3),
                            instances_running=2, api_requests=1234)
        MetricSample.create(user=eve.id, minute=minute, instances_running=7,
                            api_requests=777_777)
        UsageRecord.create(user=user.id, project=default_project_of(user.id), subject_id="ins_x",
                           resource="instance", sku="small", hour=minute.replace(minute=0),
                           quantity=1, unit_price=250, amount=250, created_at=T0)
    return Browser(app, "ada@example.test")


def bars(html: str, chart_id: str) -> list[str]:
    figure = html.split(f'id="{chart_id}"', 1)[1].split("</figure>", 1)[0]
    return re.findall(r"<rect [^>]*><title>([^<]*)</title>", figure)


def test_the_overview_draws_the_three_charts_for_the_last_day(ada):
    html = ada.page("/dashboard")
    for chart_id in CHART_IDS:
        assert len(bars(html, chart_id)) == 24  # hours
        assert f'aria-labelledby="{chart_id}-small-title"' in html
    assert "1,234" in html and "2.50" in html
    assert "777,777" not in html  # another account's requests
    assert 'aria-current="page">24 hours' in html
    assert 'href="/dashboard?window=7d"' in html


def test_the_window_switch_gets_only_the_charts_with_htmx(ada):
    fragment = ada.get("/dashboard?window=1h&part=activity",
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith("<section") and "<html" not in fragment
    assert len(bars(fragment, "chart-requests")) == 60  # minutes
    week = ada.page("/dashboard?window=7d")
    assert "<html" in week and len(bars(week, "chart-spend")) == 168


def test_an_unknown_window_shows_the_last_day(ada):
    html = ada.page("/dashboard?window=forever")
    assert len(bars(html, "chart-instances")) == 24
