"""Nodes, plans and instances in a real browser, against `appliance serve`.

As the administrator: register a simulated node and a plan on the admin pages, create an
instance with the form, watch the list follow the create job by itself (htmx polling,
no reload) until it runs, then stop it from its page. Screenshots of every page, on a
desktop and a phone viewport, land in the test output folder for a human to look at.

The simulated engine answers instantly, which would finish the create job before the
list is drawn; the node is registered with the fake engine's `delay_seconds` option, so
it takes its time to create and stop as a real engine does and the in-between states
are on screen long enough to be seen.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import (
    PHONE,
    Screenshots,
    fits_the_screen,
    nav_link,
    served_with_an_admin,
    sign_in,
    submit,
)

pytestmark = pytest.mark.slow

ENGINE_SECONDS = 3.0  # how long the slowed simulated engine takes to create an instance



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-instances"))


def register_a_fake_node(page, server) -> None:
    nav_link(page, "Admin").click()
    page.locator(".subnav").get_by_role("link", name="Nodes", exact=True).click()
    page.wait_for_url(server.url + "/admin/nodes")
    form = page.locator("#register")
    form.get_by_label("Name").fill("lab-1")
    form.get_by_label("Engine").select_option("fake")
    form.get_by_label("Endpoint").fill("fake://browser")
    form.get_by_label("vCPUs").fill("16")
    form.get_by_label("Memory (MB)").fill("32768")
    form.get_by_label("Disk (GB)").fill("500")
    form.get_by_label("Options").fill(f"delay_seconds={ENGINE_SECONDS}")
    assert submit(page, "Register and check", scope=form) == 200
    page.get_by_text("Node registered and checked.").wait_for()
    node = page.locator(".node-item", has_text="lab-1")
    assert node.locator(".badge", has_text="healthy").is_visible()
    assert node.locator(".badge", has_text="simulated").is_visible()


def add_a_plan(page, server) -> None:
    page.locator(".subnav").get_by_role("link", name="Plans", exact=True).click()
    page.wait_for_url(server.url + "/admin/plans")
    form = page.locator("#new-plan")
    form.get_by_label("Slug").fill("starter")
    form.get_by_label("Name").fill("Starter")
    form.get_by_label("vCPUs").fill("2")
    form.get_by_label("Memory (MB)").fill("2048")
    form.get_by_label("Disk (GB)").fill("25")
    form.get_by_label("Price per hour (EUR)").fill("0.01")
    form.get_by_label("Monthly cap (EUR)").fill("6.50")
    assert submit(page, "Add plan", scope=form) == 200
    row = page.locator("#plans tr", has_text="Starter")
    assert row.get_by_text("0.01 EUR").is_visible() and row.get_by_text("6.50 EUR").is_visible()


def add_an_app(page, server) -> None:
    page.locator(".subnav").get_by_role("link", name="Apps", exact=True).click()
    page.wait_for_url(server.url + "/admin/apps")
    form = page.locator("#new-app")
    form.get_by_label("Slug").fill("big-app")
    form.get_by_label("Image").select_option(label="Debian 12 (simulated) (fake)")
    form.get_by_label("Name").fill("Big app")
    form.get_by_label("Environment").fill("MODE=demo\nWORKERS=4")
    form.get_by_label("Minimum vCPUs").fill("4")
    assert submit(page, "Add app", scope=form) == 200
    row = page.locator("#apps tr", has_text="Big app")
    assert row.locator("code", has_text="WORKERS=4").is_visible()


def create_an_instance(page, server, shots: Screenshots) -> str:
    nav_link(page, "Instances").click()
    page.get_by_role("link", name="New instance").click()
    form = page.locator("#create-instance")
    form.get_by_label("Hostname").fill("web-1")
    # An app that needs more than the plan has greys the plan out (the server checks too).
    starter = form.locator(".plan-card", has_text="Starter")
    form.locator(".choice-card", has_text="Big app").click()
    assert starter.locator("input").is_disabled()
    assert starter.get_by_text("Too small for this choice").is_visible()
    shots.take(page, "create-form-app-too-big")
    form.locator(".choice-card", has_text="Debian 12 (simulated)").first.click()
    assert starter.locator("input").is_enabled()
    form.locator(".plan-card", has_text="Starter").click()
    assert form.locator(".plan-card", has_text="Starter").locator("input").is_checked()
    shots.take(page, "create-form")
    assert submit(page, "Create instance", scope=form) == 200
    password = page.locator("#new-password").input_value()
    assert re.fullmatch(r"[A-Za-z0-9]{20}", password)
    assert page.get_by_text("This is the only time it is shown").is_visible()
    shots.take(page, "password-once")
    return password


def watch_the_list_follow_the_job(page, server, shots: Screenshots) -> None:
    """The list polls while the instance is creating and stops once it runs."""
    nav_link(page, "Instances").click()
    row = page.locator("#instance-list tr", has_text="web-1")
    assert row.locator(".status-badge").inner_text() == "creating"
    assert page.locator("#instance-list[hx-trigger*='every']").count() == 1
    row.locator(".job-progress").wait_for()
    page.evaluate("window.notReloaded = true")
    shots.take(page, "instances-creating")
    row.locator(".status-badge", has_text="running").wait_for(timeout=ENGINE_SECONDS * 5000)
    assert page.evaluate("window.notReloaded === true")  # swapped in by htmx, no reload
    assert row.locator("code", has_text="10.99.").is_visible()
    assert page.locator("#instance-list[hx-trigger*='every']").count() == 0  # polling stopped
    assert row.locator(".badge", has_text="simulated").is_visible()
    shots.take(page, "instances-running")


def stop_it_from_its_page(page, shots: Screenshots) -> None:
    page.get_by_role("link", name="web-1").click()
    state = page.locator("#instance-state")
    assert state.locator(".status-badge").inner_text() == "running"
    state.get_by_text("Stop\u2026").click()
    state.get_by_role("button", name="Stop web-1").click()
    state.locator(".job-panel").wait_for()  # the job panel polls while the engine works
    assert page.locator("#instance-state[hx-trigger*='every']").count() == 1
    shots.take(page, "instance-stopping")
    state.locator(".status-badge", has_text="stopped").wait_for(timeout=ENGINE_SECONDS * 5000)
    assert page.locator("#instance-state[hx-trigger*='every']").count() == 0
    assert state.get_by_role("button", name="Start").is_enabled()
    # The job's end refreshes the timeline and the console log by themselves.
    page.locator("#events").get_by_text("instance.stopped").wait_for()
    page.locator("#console").get_by_text("powered off").wait_for()
    shots.take(page, "instance-stopped")


def test_nodes_plans_and_an_instance_in_a_browser(page, server):
    shots = Screenshots("instances")
    sign_in(page, server)
    register_a_fake_node(page, server)
    shots.take(page, "admin-nodes")
    add_a_plan(page, server)
    shots.take(page, "admin-plans")
    add_an_app(page, server)
    shots.take(page, "admin-apps")

    create_an_instance(page, server, shots)
    watch_the_list_follow_the_job(page, server, shots)
    stop_it_from_its_page(page, shots)
    instance_url = page.url

    page.goto(server.url + "/admin/images")
    shots.take(page, "admin-images")

    # Dark mode follows the system setting.
    page.emulate_media(color_scheme="dark")
    for name, path in (("instance", instance_url),
                       ("create-form", instance_url.rsplit("/", 1)[0] + "/new")):
        page.goto(path)
        shots.take(page, f"dark-{name}")
    page.emulate_media(color_scheme="light")

    # The same pages on a phone: nothing wider than the screen.
    page.set_viewport_size(PHONE)
    for name, path in (("instance", instance_url),
                       ("instances", instance_url.rsplit("/", 1)[0]),
                       ("create-form", instance_url.rsplit("/", 1)[0] + "/new"),
                       ("admin-nodes", server.url + "/admin/nodes"),
                       ("admin-plans", server.url + "/admin/plans"),
                       ("admin-images", server.url + "/admin/images")):
        page.goto(path)
        assert fits_the_screen(page), name
        shots.take(page, f"phone-{name}")

    # Deleted with a final backup: the backup is listed, and can be deleted in turn.
    page.set_viewport_size({"width": 1280, "height": 900})
    delete_keeping_a_final_backup(page, instance_url, shots)


def delete_keeping_a_final_backup(page, instance_url: str, shots: Screenshots) -> None:
    page.goto(instance_url)
    danger = page.locator("#delete")
    danger.get_by_text("Delete\u2026").click()
    danger.get_by_label("Type web-1 to confirm").fill("web-1")
    danger.get_by_label("Keep a final backup").check()
    shots.take(page, "delete-with-final-backup")
    danger.get_by_role("button", name="Delete this instance").click()
    page.get_by_text("Deleting web-1.").wait_for()
    page.get_by_role("link", name="Backups").click()
    row = page.locator("tr", has_text="web-1")
    for _ in range(int(ENGINE_SECONDS * 5)):  # the delete job archives, then destroys
        if row.locator(".badge", has_text="available").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    assert row.locator(".badge", has_text="available").is_visible()
    shots.take(page, "backups")
    row.get_by_text("Delete\u2026").click()
    row.get_by_role("button", name="Delete this backup").click()
    page.get_by_text("No backups in this project.").wait_for()
