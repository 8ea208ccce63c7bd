"""The overview's activity charts in a real browser, against `appliance serve`.

A day of per-minute samples and a day of metered usage are written before the server
starts; then the three charts are looked at on a desktop, switched between 1 h, 24 h and
7 d with htmx (no reload), and checked on a 375 px phone. Screenshots land in the test
output folder for a human to look at.
"""

from __future__ import annotations

import datetime as dt

import pytest

from appliance import create_app
from appliance.db import database
from appliance.models import Instance, MetricSample, User
from appliance.services import clock
from appliance.services.billing import ledger, metering
from tests.browser import (
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
)
from tests.factories import (
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_plan,
)

pytestmark = pytest.mark.slow

MINUTE = dt.timedelta(minutes=1)


def seed_activity(data) -> None:
    """Two days of usage on two instances and a day of samples with a daily rhythm."""
    app = create_app({"DATA_DIR": str(data)})
    now = clock.now()
    with app.app_context(), database.connection_context():
        user = User.get(User.email == "ada@example.com")
        ledger.post(user.id, "grant", 5000, "grant:seed", note="Welcome credit")
        project = default_project_of(user.id)
        node = make_node()
        image = make_image(node)
        small, large = make_plan("small", price=4), make_plan("large", price=15)
        make_instance(project, small, node, image, created_at=now - dt.timedelta(days=2))
        make_instance(project, large, node, image, created_at=now - dt.timedelta(hours=9))
        metering.tick(now)
        for instance in Instance.select().where(Instance.deleted_at.is_null()):
            delete_instance(instance, now)
        minute = now.replace(second=0, microsecond=0)
        rows = [{"user": user.id, "minute": minute - i * MINUTE,
                 "instances_running": 1 if i > 540 else 2,
                 "api_requests": (i * 7919) % 23 if (i // 60) % 3 else 0}
                for i in range(1440)]
        MetricSample.insert_many(rows).execute()
    database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-overview"),
                                    seed_activity)


def test_the_overview_charts_in_a_browser(page, server):
    shots = Screenshots("overview")
    sign_in(page, server)
    page.goto(server.url + "/dashboard")
    charts = page.locator("#overview-activity svg.chart")
    assert charts.count() == 3
    assert page.locator("#chart-requests rect").count() == 24
    shots.take(page, "24-hours")
    page.evaluate("window.notReloaded = true")
    page.locator("#overview-activity").get_by_role("link", name="1 hour").click()
    page.wait_for_url(server.url + "/dashboard?window=1h")
    page.locator("#overview-activity [aria-current='page']", has_text="1 hour").wait_for()
    assert page.locator("#chart-requests rect").count() == 60
    assert page.evaluate("window.notReloaded === true")
    shots.take(page, "1-hour")
    page.locator("#overview-activity").get_by_role("link", name="7 days").click()
    page.locator("#overview-activity [aria-current='page']", has_text="7 days").wait_for()
    assert page.locator("#chart-spend rect").count() == 168
    shots.take(page, "7-days")

    page.set_viewport_size(SMALL_PHONE)
    for window in ("24h", "1h", "7d"):
        page.goto(f"{server.url}/dashboard?window={window}")
        assert fits_the_screen(page), window
        assert page.locator("#chart-instances svg").is_visible()
        shots.take(page, f"phone-{window}")
