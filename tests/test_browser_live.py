"""Live updates and the bell in a real browser, against `appliance serve`.

The administrator has the instances list open while an instance is created from another
channel (the JSON API, as a script would): without a reload the list shows it creating and
then running, and the bell in the header counts the `instance.ready` notification - all
from static/js/live.js following GET /api/v1/events/stream. Marking everything read on the
notifications page takes the count away. Quick navigation between pages never meets a 429:
each page opens a stream, and past EVENT_STREAMS_PER_USER the server ends the user's
oldest one instead of refusing the new one.

The node is simulated with the fake engine's `delay_seconds`, so the create takes a few
seconds and the in-between state is on screen long enough to be seen. Screenshots at
desktop and 375 px phone width land in the test output folder.
"""

from __future__ import annotations

import pytest
import requests

from tests.browser import (
    ADMIN_EMAIL,
    PASSWORD,
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
)
from tests.factories import wait_for

pytestmark = pytest.mark.slow

ENGINE_SECONDS = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-live"))


class Api:
    """The JSON API as a script would use it, with the administrator's access token."""

    def __init__(self, server) -> None:
        self.base = server.url + "/api/v1"
        login = requests.post(self.base + "/auth/login", timeout=10, json={
            "email": ADMIN_EMAIL, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def call(self, method: str, path: str, status: int, **kwargs) -> dict:
        response = requests.request(method, self.base + path, headers=self.headers,
                                    timeout=15, **kwargs)
        assert response.status_code == status, (path, response.status_code, response.text)
        return response.json()


def seed_a_slow_node_and_a_plan(api: Api) -> tuple[str, str]:
    """A healthy simulated node that takes ENGINE_SECONDS per operation, and a free plan;
    returns (the default project's id, an image id)."""
    api.call("POST", "/admin/nodes", 201, json={
        "name": "lab-1", "engine": "fake", "endpoint": "fake://browser-live",
        "options": {"delay_seconds": str(ENGINE_SECONDS)}, "capacity_vcpus": 16,
        "capacity_memory_mb": 32768, "capacity_disk_gb": 500})
    api.call("POST", "/admin/plans", 201, json={
        "slug": "starter", "name": "Starter", "vcpus": 1, "memory_mb": 1024, "disk_gb": 10,
        "price_hourly": 0, "price_monthly_cap": 0})
    images = api.call("GET", "/images", 200)["data"]
    image = next(i for i in images if "Debian" in i["name"])
    project = next(p for p in api.call("GET", "/projects", 200)["data"] if p["is_default"])
    return project["id"], image["id"]


def bell_count(page) -> str:
    """The number on the bell, or "" when there is none."""
    badge = page.locator("#notification-bell .bell-count")
    return badge.inner_text() if badge.count() else ""


def stream_answers(page) -> list[int]:
    """Statuses of every /events/stream answer the page gets from now on."""
    statuses: list[int] = []
    page.on("response", lambda response: statuses.append(response.status)
            if "/api/v1/events/stream" in response.url else None)
    return statuses


def test_the_list_and_the_bell_follow_events_without_a_reload(page, server):
    shots = Screenshots("live")
    streams = stream_answers(page)
    sign_in(page, server)
    api = Api(server)
    project_id, image_id = seed_a_slow_node_and_a_plan(api)

    instances_url = f"{server.url}/projects/{project_id}/instances"
    page.goto(instances_url)
    page.wait_for_function("document.body.dataset.live === 'on'")  # the stream is open
    assert bell_count(page) == ""
    assert page.locator("#instance-list tr", has_text="web-1").count() == 0
    page.evaluate("window.notReloaded = true")

    # Created by a script, not by this page: only the live stream can tell the page.
    api.call("POST", f"/projects/{project_id}/instances", 202, json={
        "name": "web-1", "plan_id": "starter", "image_id": image_id})
    row = page.locator("#instance-list tr", has_text="web-1")
    row.locator(".status-badge", has_text="creating").wait_for()
    shots.take(page, "instances-creating")
    row.locator(".status-badge", has_text="running").wait_for(timeout=ENGINE_SECONDS * 5000)
    wait_for(lambda: bell_count(page) == "1", "the bell counting instance.ready")
    bell = page.locator("#notification-bell")
    assert bell.get_attribute("aria-label") == "Notifications, 1 unread"
    assert page.evaluate("window.notReloaded === true")  # swapped in by htmx, no reload
    shots.take(page, "instances-running-bell")

    # The notifications page: the ready instance, unread; mark all read empties the bell.
    bell.click()
    page.wait_for_url(server.url + "/notifications")
    assert bell.get_attribute("aria-current") == "page"  # as a nav link is, here
    item = page.locator(".notification-unread", has_text="web-1")
    assert item.is_visible()
    shots.take(page, "notifications-unread")
    page.evaluate("window.notReloaded = true")
    page.get_by_role("button", name="Mark all read").click()
    page.get_by_role("link", name="Unread (0)").wait_for()
    wait_for(lambda: page.locator(".notification-unread").count() == 0,
             "the list showing everything read")
    wait_for(lambda: bell_count(page) == "", "the bell emptying")
    assert bell.get_attribute("aria-label") == "Notifications"
    assert bell.get_attribute("aria-current") == "page"  # still, after its refresh
    assert page.evaluate("window.notReloaded === true")
    shots.take(page, "notifications-read")

    # Quick navigation: every page opens a stream; none is refused.
    pages = [f"{server.url}/", f"{server.url}/projects", instances_url,
             f"{server.url}/notifications", f"{server.url}/events"]
    for _ in range(2):
        for url in pages:
            page.goto(url)
    page.wait_for_function("document.body.dataset.live === 'on'")
    assert 429 not in streams and streams, streams

    # The bell and the notifications on a phone.
    page.set_viewport_size(SMALL_PHONE)
    for name, url in (("instances", instances_url), ("notifications", pages[3])):
        page.goto(url)
        assert fits_the_screen(page), name
        assert page.locator("#notification-bell").is_visible()
        shots.take(page, f"phone-{name}")
    page.evaluate("document.body.dataset.live === 'on'")
