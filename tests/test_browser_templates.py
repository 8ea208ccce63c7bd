"""Templates in a real browser, against `appliance serve` with its strict Content-Security-
Policy (a violation is a console error, which fails the test).

An instance is backed up; "Save as template" on its backup row leads to the project's
Templates page, where the template turns available; it is renamed, offered in the create
form, makes a new instance, and is deleted after a confirmation. Screenshots at 1366 px
and on a phone (375 px) land in the test output folder; long names wrap, nothing is wider
than the phone's screen.
"""

from __future__ import annotations

import pytest

from appliance import create_app
from appliance.models import Plan
from appliance.services import clock
from appliance.services.instances import nodes
from tests.browser import (
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    nav_link,
    served_with_an_admin,
    sign_in,
)
from tests.test_browser_backups import create_an_instance

pytestmark = pytest.mark.slow

ENGINE_SECONDS = 1.0
DESKTOP = {"width": 1366, "height": 900}
LONG_NAME = "the-golden-web-server-template-with-everything-tuned-for-production"[:64]


def seed(data) -> None:
    app = create_app({"DATA_DIR": str(data)})
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_starter", slug="starter", name="Starter", vcpus=1, memory_mb=512,
                    disk_gb=10, price_hourly=1, price_monthly_cap=500, created_at=now,
                    updated_at=now)
        node = nodes._insert("lab-1", "fake", "fake://browser-templates",
                             options={"delay_seconds": str(ENGINE_SECONDS)}, enabled=True,
                             capacity=nodes.Capacity(16, 32768, 500))
        nodes.check_health(node)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-templates"), seed)


def both_sizes(page, shots: Screenshots, name: str) -> None:
    page.set_viewport_size(DESKTOP)
    shots.take(page, name)
    page.set_viewport_size(SMALL_PHONE)
    assert fits_the_screen(page), name
    shots.take(page, "phone-" + name)
    page.set_viewport_size(DESKTOP)


def test_save_a_backup_as_a_template_and_make_an_instance_from_it(page, server):
    shots = Screenshots("templates")
    page.set_viewport_size(DESKTOP)
    sign_in(page, server)
    nav_link(page, "Instances").click()
    page.get_by_role("link", name="New instance").click()
    create_an_instance(page, "web-1", "Debian 12 (simulated)")
    page.get_by_role("link", name="web-1").first.click()
    page.locator("#instance-state .status-badge", has_text="running").wait_for(
        timeout=ENGINE_SECONDS * 60000)
    card = page.locator("#backups")
    card.get_by_label("Name (optional)").fill("nightly")
    card.get_by_role("button", name="Back up now").click()
    row = card.locator("tr", has_text="nightly")
    row.locator(".badge", has_text="available").wait_for(timeout=ENGINE_SECONDS * 60000)
    # The card is swapped in again once the job has settled: open the form after that.
    page.locator("#instance-state .job-last", has_text="backup").wait_for()
    page.wait_for_timeout(1000)
    row = card.locator("tr", has_text="nightly")

    row.get_by_text("Save as template\u2026").click()
    row.get_by_label("Template name").fill(LONG_NAME)
    both_sizes(page, shots, "save-as-template")
    with page.expect_navigation():
        row.get_by_role("button", name="Save as template", exact=True).click()
    assert "/templates" in page.url
    page.get_by_text("Saving the template").wait_for()
    for _ in range(40):  # the job runs at once; the page shows it when reloaded
        if page.locator("tr", has_text=LONG_NAME).locator(".badge",
                                                         has_text="available").count():
            break
        page.wait_for_timeout(250)
        page.reload()
    template_row = page.locator("tr", has_text=LONG_NAME)
    template_row.locator(".badge", has_text="available").wait_for()
    both_sizes(page, shots, "templates-page")

    template_row.get_by_text("Rename\u2026").click()
    template_row.get_by_label("New name").fill(LONG_NAME[:-4] + "-v2")
    with page.expect_navigation():
        template_row.get_by_role("button", name="Rename", exact=True).click()
    page.get_by_text("Template renamed.").wait_for()
    renamed = LONG_NAME[:-4] + "-v2"
    template_row = page.locator("tr", has_text=renamed)
    template_row.get_by_role("link", name="Create an instance from this").click()
    form = page.locator("#create-instance")
    assert form.locator(".choice-card", has_text=renamed).locator("input").is_checked()
    both_sizes(page, shots, "create-from-template")
    create_an_instance(page, "web-2", renamed)
    page.get_by_role("link", name="web-2").first.click()
    page.locator("#instance-state .status-badge", has_text="running").wait_for(
        timeout=ENGINE_SECONDS * 60000)
    page.locator("#events").get_by_text("from the template").wait_for()

    delete_it(page, server, renamed)


def delete_it(page, server, renamed: str) -> None:
    page.goto(server.url + page.url.split(server.url, 1)[1].split("/instances")[0]
              + "/templates")
    template_row = page.locator("tr", has_text=renamed)
    template_row.get_by_text("Delete\u2026").click()
    with page.expect_navigation():
        template_row.get_by_role("button", name="Delete this template").click()
    page.get_by_text("Template deleted.").wait_for()
    page.get_by_text("No templates in this project yet.").wait_for()
