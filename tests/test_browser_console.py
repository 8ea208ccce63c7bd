"""The web console in a real browser, against `appliance serve` on real engines.

One served appliance with an Incus node and a Docker node, an instance on each (the
local test image, made through the JSON API). In Chromium, with the dashboard's strict
Content-Security-Policy (a violation fails the test): the administrator opens the
console on the instance page, types `echo hello-$RANDOM` and sees the shell's answer
within a second; a paste (Ctrl+Shift+V) is typed too; the terminal follows the window's
size down to a phone (the shell's `stty size` says so); `exit` ends the session with a
message; stopping the instance ends a session with a message saying so. A viewer of
the project sees no console button and the API refuses them (403), and their console
log card follows the log live. Screenshots at
1366 px and 375 px land in the test output folder.

Under CI=true a missing engine or Chromium is a failure, never a skip.
"""

from __future__ import annotations

import re
import time

import pytest
import requests

from appliance import create_app, drivers
from appliance.models import Plan
from appliance.services import clock
from appliance.services.instances import nodes
from tests.browser import (
    ADMIN_EMAIL,
    PASSWORD,
    SMALL_PHONE,
    PageProblems,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
)
from tests.driver_contract import require_engine
from tests.factories import make_user, wait_for

pytestmark = pytest.mark.slow

IMAGE = "appliance-test/busybox"
VIEWER = "vera@example.com"
DESKTOP = {"width": 1366, "height": 900}
ENGINES = ("incus", "docker")


def seed(data) -> None:
    """Both engines as nodes, a plan, and a second user (made a viewer later)."""
    for engine in ENGINES:
        require_engine(engine, lambda engine=engine: drivers.connect(engine, "").info())
    app = create_app({"DATA_DIR": str(data)})
    make_user(app, VIEWER, PASSWORD, display_name="Vera Viewer")
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_small", slug="small", name="Small", vcpus=1, memory_mb=128,
                    disk_gb=1, price_hourly=0, price_monthly_cap=0, created_at=now,
                    updated_at=now)
        for engine in ENGINES:
            node = nodes._insert(engine, engine, "", options={}, enabled=True,
                                 capacity=nodes.Capacity(8, 8192, 100))
            assert nodes.check_health(node).health == "healthy"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-console"), seed)


class Api:
    def __init__(self, server, email: str = ADMIN_EMAIL) -> None:
        self.base = server.url + "/api/v1"
        login = requests.post(self.base + "/auth/login", timeout=10,
                              json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

    def call(self, method: str, path: str, status: int, **kwargs) -> dict:
        response = requests.request(method, self.base + path, headers=self.headers,
                                    timeout=60, **kwargs)
        assert response.status_code == status, (path, response.status_code, response.text)
        return response.json() if response.content else {}


@pytest.fixture(scope="module")
def instances(server):
    """{engine: (project id, instance id)}: a running instance on each engine."""
    api = Api(server)
    project = next(p for p in api.call("GET", "/projects", 200)["data"] if p["is_default"])
    api.call("POST", f"/projects/{project['id']}/members", 201,
             json={"email": VIEWER, "role": "viewer"})
    made = {}
    images = api.call("GET", "/images", 200)["data"]
    for engine in ENGINES:
        image = next(i for i in images if i["engine"] == engine and IMAGE in i["ref"])
        created = api.call("POST", f"/projects/{project['id']}/instances", 202, json={
            "name": f"console-{engine}", "plan_id": "small", "image_id": image["id"]})
        made[engine] = (project["id"], created["instance"]["id"])
    for engine, (project_id, instance_id) in made.items():
        wait_for(lambda p=project_id, i=instance_id: api.call(
            "GET", f"/projects/{p}/instances/{i}", 200)["job"] is None, f"{engine} create",
            timeout=120)
    yield made
    for project_id, instance_id in made.values():
        api.call("DELETE", f"/projects/{project_id}/instances/{instance_id}", 202)


ROWS_TEXT = ("document.querySelector('#terminal .xterm-rows').innerText"
             ".replace(/\u00a0/g, ' ')")  # the DOM renderer's cells hold no-break spaces


def terminal_text(page) -> str:
    return page.evaluate(ROWS_TEXT)


def wait_for_text(page, pattern: str, timeout_ms: int) -> str:
    """Wait until the terminal's text matches `pattern` (a regex); return the match."""
    # Polled from here: the page's CSP (no 'unsafe-eval') refuses wait_for_function's
    # polling of an expression.
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        found = re.search(pattern, terminal_text(page))
        if found:
            return found.group(0)
        assert time.monotonic() < deadline, (pattern, terminal_text(page))
        time.sleep(0.01)


def a_paste_is_typed(page) -> None:
    """A paste from the clipboard (Ctrl+Shift+V, then Ctrl+V) is typed as it is; a
    selection is copied with Ctrl+Shift+C."""
    for keys, number in (("Control+Shift+V", 42), ("Control+V", 43)):
        page.evaluate(f"navigator.clipboard.writeText('echo pasted-$((6*7+{number - 42}))')")
        page.keyboard.press(keys)
        wait_for_text(page, rf"# echo pasted-\$\(\(6\*7\+{number - 42}\)\)", 3000)
        page.keyboard.press("Enter")
        wait_for_text(page, rf"\npasted-{number}", 3000)
    banner = page.locator("#terminal .xterm-rows > div", has_text="BusyBox").first
    box = banner.bounding_box()  # xterm's screen layer above the rows takes the clicks
    page.mouse.dblclick(box["x"] + 12, box["y"] + box["height"] / 2)  # selects that word
    page.keyboard.press("Control+Shift+C")
    assert page.evaluate("navigator.clipboard.readText()") == "BusyBox"


def the_tty_follows_the_window(page, shots: Screenshots) -> None:
    """The shell sees a narrower TTY on a phone; screenshots of both sizes."""
    page.keyboard.type("echo wide $(stty size)")
    page.keyboard.press("Enter")
    wide = wait_for_text(page, r"\nwide \d+ \d+", 3000)
    shots.take(page, "desktop")
    page.set_viewport_size(SMALL_PHONE)
    page.wait_for_timeout(400)  # the debounced fit and its resize POST
    page.keyboard.type("echo narrow $(stty size)")
    page.keyboard.press("Enter")
    narrow = wait_for_text(page, r"\nnarrow \d+ \d+", 3000)
    assert int(narrow.split()[-1]) < int(wide.split()[-1]), (wide, narrow)
    assert fits_the_screen(page)
    shots.take(page, "phone")
    page.set_viewport_size(DESKTOP)
    page.wait_for_timeout(400)  # its resize is sent before the shell exits


@pytest.mark.parametrize("engine", ENGINES)
def test_a_member_types_into_the_console_and_exit_ends_it(server, instances, chromium,
                                                          engine):
    project_id, instance_id = instances[engine]
    context = chromium.new_context(viewport=DESKTOP, locale="en-GB", timezone_id="UTC")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    problems = PageProblems(page)
    shots = Screenshots(f"console-{engine}")
    try:
        sign_in(page, server)
        page.goto(f"{server.url}/projects/{project_id}/instances/{instance_id}")
        card = page.locator("#terminal")
        card.get_by_role("button", name="Open console").click()
        wait_for(lambda: card.get_attribute("data-console-state") == "open", "the console opens")
        wait_for_text(page, r"[#$] ", 10_000)  # the prompt
        page.locator("#terminal .xterm").click()
        page.keyboard.type("echo hello-$RANDOM")
        began = time.monotonic()
        page.keyboard.press("Enter")
        wait_for_text(page, r"\nhello-\d+", 1000)  # the shell's answer, within a second
        took = time.monotonic() - began
        assert took < 1.0, took
        assert "echo hello-$RANDOM" in terminal_text(page)  # what was typed, echoed

        a_paste_is_typed(page)
        the_tty_follows_the_window(page, shots)

        page.keyboard.type("exit")
        page.keyboard.press("Enter")
        wait_for(lambda: card.get_attribute("data-console-state") == "ended",
                 "the session ends", timeout=5)
        status = card.locator("[data-console-status]").inner_text()
        assert status == "The shell exited; the console session has ended.", status
        assert card.get_by_role("button", name="Open a new console").is_visible()
        assert not card.get_by_role("button", name="Close").is_visible()
        shots.take(page, "ended")
        assert problems.errors == [], problems.errors
    except BaseException:
        shots.take(page, "failure")
        print(problems.errors, problems.console)
        raise
    finally:
        context.close()


def test_stopping_the_instance_ends_the_console_with_a_message(server, instances, page):
    project_id, instance_id = instances["docker"]
    problems = PageProblems(page)
    sign_in(page, server)
    page.goto(f"{server.url}/projects/{project_id}/instances/{instance_id}")
    card = page.locator("#terminal")
    card.get_by_role("button", name="Open console").click()
    wait_for(lambda: card.get_attribute("data-console-state") == "open", "the console opens")
    wait_for_text(page, r"[#$] ", 10_000)
    api = Api(server)
    path = f"/projects/{project_id}/instances/{instance_id}"
    api.call("POST", path + "/stop", 202)
    wait_for(lambda: card.get_attribute("data-console-state") == "ended",
             "the session ends", timeout=60)
    status = card.locator("[data-console-status]").inner_text()
    assert status == "The instance stopped; the console session has ended.", status
    Screenshots("console-stopped").take(page, "stopped")
    wait_for(lambda: api.call("GET", path, 200)["job"] is None, "the stop", timeout=60)
    api.call("POST", path + "/start", 202)  # as the other tests found it
    wait_for(lambda: api.call("GET", path, 200)["job"] is None, "the start", timeout=60)
    assert problems.errors == [], problems.errors


def test_a_viewer_gets_no_console_button_and_a_403(server, instances, page):
    project_id, instance_id = instances["incus"]
    problems = PageProblems(page)
    sign_in(page, server, VIEWER)
    page.goto(f"{server.url}/projects/{project_id}/instances/{instance_id}")
    assert page.get_by_role("heading", name="console-incus").is_visible()
    assert page.locator("#terminal").count() == 0
    assert page.get_by_role("button", name="Open console").count() == 0
    # The console log card follows the live stream (GET .../logs/stream), viewers too.
    log = page.locator("pre[data-log-stream]")
    wait_for(lambda: log.get_attribute("data-log-live") == "true", "the live console log")
    assert "appliance-test-init" in log.inner_text()
    viewer = Api(server, VIEWER)
    refused = viewer.call("POST", f"/projects/{project_id}/instances/{instance_id}/console",
                          403, json={})
    assert refused["error"]["code"] == "role_denied"
    assert problems.errors == [], problems.errors
