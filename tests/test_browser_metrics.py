"""The instance page's resource graphs in a real browser, against `appliance serve` on the
simulated engine sampling every 2 seconds.

An instance is created through the API; eight days of per-minute samples are written
into its history; the four graphs are looked at at 1366 px, switched between windows
with htmx (no reload), seen to update while the page stays open, and a slow answer for
an old window is seen to be dropped; then the page is checked at 375 px, and the admin
node page's graphs too. Screenshots land in the test output folder for a human to look at.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pytest
import requests

from appliance import create_app
from appliance.db import database
from appliance.models import Image, Node
from appliance.services import clock
from appliance.services.metrics import store
from tests.browser import (
    ADMIN_EMAIL,
    PASSWORD,
    SMALL_PHONE,
    ApplianceServer,
    Screenshots,
    create_admin_from_shell,
    fits_the_screen,
    running,
    sign_in,
)
from tests.factories import make_image, make_node, make_plan

pytestmark = pytest.mark.slow
DESKTOP = {"width": 1366, "height": 900}
# What sticks out of a phone's screen, for the assertion's message.
WIDEST = """() => [...document.querySelectorAll('main *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth)
    .map(e => e.tagName + '.' + (e.className.baseVal ?? e.className)).slice(0, 8)"""


def seed_catalog(data) -> None:
    app = create_app({"DATA_DIR": str(data)})
    with app.app_context(), database.connection_context():
        node = make_node("fake-metrics", endpoint="fake://browser-metrics")
        make_image(node, "fake/debian-12", name="Debian 12")
        make_plan("small", price=1, vcpus=2, memory_mb=1024, disk_gb=10)
    database.close()


def seed_history(data, instance_id: str) -> None:
    """Eight days of minutes: CPU with a daily rhythm, memory stepping up, some traffic,
    and a gap of two hours (the instance stopped) that the graphs must leave open."""
    now = clock.now().replace(second=0, microsecond=0)
    params = []
    for minute in range(8 * 1440, 0, -1):
        at = now - dt.timedelta(minutes=minute)
        if 300 <= minute < 420:
            continue
        cpu = 1500 + 1200 * ((at.hour + 6) % 24 < 10) + (minute * 37) % 400
        figures = (cpu, (300 + (minute // 600) % 4 * 80) * 2**20, 4000 + minute % 900,
                   1500 + minute % 500, (2 * 2**30) + minute * 1000)
        when = int(at.timestamp())
        for step in store.STEPS:
            params.append((instance_id, step, when - when % step, 1, 1, *figures))
    connection = sqlite3.connect(data / "appliance.db", timeout=10)
    with connection:
        connection.executemany(store.INSTANCES.upsert, params)
    connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("browser-metrics")
    data = workdir / "data"
    create_admin_from_shell(workdir, data, ADMIN_EMAIL, "Ada", PASSWORD)
    seed_catalog(data)
    appliance = ApplianceServer(workdir, {"APPLIANCE_DATA_DIR": str(data),
                                          "APPLIANCE_INSTANCE_METRICS_INTERVAL_SECONDS": "2"})
    for started in running(appliance):
        started.data = data
        yield started


@pytest.fixture(scope="module")
def instance(server) -> dict:
    api = server.url + "/api/v1"
    session = requests.Session()
    token = session.post(api + "/auth/login", json={"email": ADMIN_EMAIL,
                                                    "password": PASSWORD}, timeout=10).json()
    session.headers["Authorization"] = f"Bearer {token['access_token']}"
    project = session.get(api + "/projects", timeout=10).json()["data"][0]["id"]
    app = create_app({"DATA_DIR": str(server.data)})
    with app.app_context(), database.connection_context():
        image = Image.get(Image.ref == "fake/debian-12").id
        node = Node.get(Node.name == "fake-metrics").id
    database.close()
    created = session.post(f"{api}/projects/{project}/instances", timeout=10, json={
        "name": "a-rather-long-instance-name-for-the-graphs", "plan_id": "small",
        "image_id": image})
    assert created.status_code == 202, created.text
    body = created.json()["instance"]
    deadline = time.monotonic() + 20
    while session.get(f"{api}/projects/{project}/instances/{body['id']}",
                      timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    seed_history(server.data, body["id"])
    return {"id": body["id"], "project": project, "node": node,
            "path": f"/projects/{project}/instances/{body['id']}"}


def test_the_instance_graphs_switch_windows_update_live_and_drop_stale_answers(
        page, server, instance):
    shots = Screenshots("metrics")
    page.set_viewport_size(DESKTOP)
    sign_in(page, server)
    page.goto(server.url + instance["path"])
    card = page.locator("#metrics")
    assert card.locator("svg.metric-svg").count() == 4
    card.screenshot(path=str(shots.folder / "metrics-00-card-desktop.png"))
    assert card.get_attribute("data-window") == "24h"
    assert card.locator("#metric-cpu polyline").count() >= 2  # broken by the gap
    assert card.locator("#metric-network .line-2 polyline").count() >= 1  # sent
    shots.take(page, "instance-24h")

    page.evaluate("window.notReloaded = true")
    for label, window in (("7 days", "7d"), ("30 days", "30d"), ("1 hour", "1h")):
        card.get_by_role("link", name=label).click()
        page.locator(f"#metrics[data-window='{window}']").wait_for()
    assert page.evaluate("window.notReloaded === true")
    shots.take(page, "instance-1h")

    # Live: the card polls every sampling interval; the newest minute gets samples.
    with page.expect_response(lambda r: "/metrics?window=1h" in r.url, timeout=10_000):
        pass
    cpu_now = page.locator("#metric-cpu .metric-now strong").inner_text()
    assert cpu_now.endswith("%"), cpu_now

    # A slow answer for 7 days, overtaken by a click on 24 hours, is never shown.
    def slow(route):
        time.sleep(1.5)
        route.continue_()

    page.route("**/metrics?window=7d", slow)
    card = page.locator("#metrics")
    card.get_by_role("link", name="7 days").click()
    page.locator("#metrics").get_by_role("link", name="24 hours").click()
    page.locator("#metrics[data-window='24h']").wait_for()
    page.wait_for_timeout(2500)
    assert page.locator("#metrics").get_attribute("data-window") == "24h"
    page.unroute("**/metrics?window=7d")

    details = page.locator("#metric-memory details")
    details.locator("summary").click()
    assert details.locator("tbody tr").count() > 10
    shots.take(page, "instance-table")

    page.set_viewport_size(SMALL_PHONE)
    page.goto(server.url + instance["path"] + "?metrics_window=7d")
    shots.take(page, "instance-phone-7d")
    wide = page.evaluate(WIDEST)
    assert fits_the_screen(page), wide
    assert page.locator("#metric-disk svg").is_visible()
    page.locator("#metrics").screenshot(path=str(shots.folder / "metrics-05-card-phone.png"))


def test_the_admin_node_page_shows_host_graphs_beside_the_allocation(page, server, instance):
    shots = Screenshots("metrics-node")
    page.set_viewport_size(DESKTOP)
    sign_in(page, server)
    page.goto(f"{server.url}/admin/nodes/{instance['node']}?metrics_window=1h")
    page.locator("[data-testid='measured-running']", has_text="1").wait_for(timeout=10_000)
    assert page.locator("#metrics svg.metric-svg").count() == 4
    shots.take(page, "node-desktop")
    page.set_viewport_size(SMALL_PHONE)
    page.reload()
    wide = page.evaluate(WIDEST)
    shots.take(page, "node-phone")
    assert fits_the_screen(page), wide
