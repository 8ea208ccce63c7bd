"""Backups in a real browser, against `appliance serve` with its strict Content-Security-
Policy (a violation is a console error, which fails the test).

On the instance page: Back up now (htmx), the state card shows the job's progress and
the Backups card shows the backup available when the job ends, without a reload; a
restore refuses a wrong name and runs with the right one; then the project's Backups
page makes a new instance from the backup. Screenshots on a desktop and a phone viewport
land in the test output folder; nothing is wider than the phone's screen.

The simulated engine is slowed (`delay_seconds`) so the in-between states are on screen.
"""

from __future__ import annotations

import pytest

from appliance import create_app
from appliance.models import Plan
from appliance.services import clock
from appliance.services.instances import nodes
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

ENGINE_SECONDS = 3.0
LONG_NAME = "the-backup-taken-before-the-big-upgrade-of-everything-that-runs-here"[:64]


def seed(data) -> None:
    """A slowed simulated node and a plan, as an administrator would have set them up."""
    app = create_app({"DATA_DIR": str(data)})
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_starter", slug="starter", name="Starter", vcpus=1, memory_mb=512,
                    disk_gb=10, price_hourly=1, price_monthly_cap=500, created_at=now,
                    updated_at=now)
        node = nodes._insert("lab-1", "fake", "fake://browser-backups",
                             options={"delay_seconds": str(ENGINE_SECONDS)}, enabled=True,
                             capacity=nodes.Capacity(16, 32768, 500))
        nodes.check_health(node)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-backups"), seed)


def create_an_instance(page, name: str, source: str) -> None:
    form = page.locator("#create-instance")
    form.get_by_label("Hostname").fill(name)
    form.locator(".choice-card", has_text=source).first.click()
    form.locator(".plan-card", has_text="Starter").click()
    assert submit(page, "Create instance", scope=form) == 200
    page.get_by_text("This is the only time it is shown").wait_for()


def test_backups_on_the_instance_page_and_an_instance_from_one(page, server):
    shots = Screenshots("backups")
    sign_in(page, server)
    nav_link(page, "Instances").click()
    page.get_by_role("link", name="New instance").click()
    create_an_instance(page, "web-1", "Debian 12 (simulated)")
    page.get_by_role("link", name="web-1").first.click()
    state = page.locator("#instance-state")
    state.locator(".status-badge", has_text="running").wait_for(timeout=ENGINE_SECONDS * 8000)
    state.locator(".job-last", has_text="create").wait_for()  # its create job has ended

    back_up_and_restore(page, shots)

    page.set_viewport_size(PHONE)
    assert fits_the_screen(page)
    shots.take(page, "phone-instance")
    page.set_viewport_size({"width": 1280, "height": 900})
    create_from_the_project_page(page, shots)


def back_up_and_restore(page, shots: Screenshots) -> None:
    state = page.locator("#instance-state")
    card = page.locator("#backups")
    card.get_by_label("Name (optional)").fill(LONG_NAME)
    page.evaluate("window.notReloaded = true")
    card.get_by_role("button", name="Back up now").click()
    card.get_by_text("Backing up").wait_for()
    state.locator(".job-panel").wait_for()  # the state card follows the job
    shots.take(page, "backing-up")
    row = card.locator("tr", has_text=LONG_NAME)
    row.locator(".badge", has_text="available").wait_for(timeout=ENGINE_SECONDS * 8000)
    assert page.evaluate("window.notReloaded === true")  # swapped in by htmx
    shots.take(page, "backed-up")

    row.get_by_text("Restore\u2026").click()
    row.get_by_label("Type web-1 to confirm").fill("web-2")
    row.get_by_role("button", name="Restore this backup").click()
    card.get_by_text("Type the instance's name exactly to confirm.").wait_for()
    row = card.locator("tr", has_text=LONG_NAME)
    row.get_by_label("Type web-1 to confirm").fill("web-1")
    row.get_by_role("button", name="Restore this backup").click()
    card.get_by_text("Restoring web-1").wait_for()
    state.locator(".job-panel").wait_for()
    shots.take(page, "restoring")
    state.locator(".job-last", has_text="restore").wait_for(timeout=ENGINE_SECONDS * 8000)
    page.locator("#events").get_by_text("backup.restored").wait_for()
    shots.take(page, "restored")


def create_from_the_project_page(page, shots: Screenshots) -> None:
    page.locator("#backups").get_by_role("link", name="All backups of the project").click()
    backups_row = page.locator("tr", has_text=LONG_NAME)
    shots.take(page, "project-backups")
    page.set_viewport_size(PHONE)
    assert fits_the_screen(page)
    shots.take(page, "phone-project-backups")
    page.set_viewport_size({"width": 1280, "height": 900})
    backups_row.get_by_role("link", name="Create an instance from this").click()
    form = page.locator("#create-instance")
    chosen = form.locator(".choice-card", has_text=LONG_NAME).locator("input")
    assert chosen.is_checked()
    shots.take(page, "create-from-backup")
    create_an_instance(page, "web-2", LONG_NAME)
    page.get_by_role("link", name="web-2").first.click()
    page.locator("#instance-state .status-badge", has_text="running").wait_for(
        timeout=ENGINE_SECONDS * 8000)
    page.locator("#events").get_by_text("from the backup").wait_for()
