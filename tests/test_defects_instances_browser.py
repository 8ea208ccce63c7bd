"""Long names in a real browser: a 100-character plan name and a 64-character hostname
keep the plans page, the instance list and the instance's Resize card within the
window (they wrap or are cut short, with the whole name in a tooltip)."""

from __future__ import annotations

import pytest

from appliance import create_app
from appliance.models import Image, Plan, Project, User
from tests.browser import ADMIN_EMAIL, served_with_an_admin, sign_in
from tests.factories import make_image, make_instance, make_node, make_plan

pytestmark = pytest.mark.slow

PLAN_NAME = "Enormous-" + "x" * 91  # 100 characters, no space to break at
HOSTNAME = "h" * 64
WIDTH = 1280


def _seed(data) -> None:
    app = create_app({"DATA_DIR": str(data)})
    with app.app_context():
        small = make_plan("small")
        make_plan("huge", vcpus=2, memory_mb=2048, disk_gb=20)
        Plan.update(name=PLAN_NAME).where(Plan.slug == "huge").execute()
        node = make_node("lab")
        image = make_image(node)
        project = Project.get(Project.created_by == User.get(User.email == ADMIN_EMAIL).id,
                              Project.is_default)
        assert Image.get_by_id(image.id)
        make_instance(project, small, node, image, name=HOSTNAME)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("long-names"), _seed)


def _page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_long_plan_names_and_hostnames_keep_the_pages_within_the_window(page, server):
    sign_in(page, server)
    page.goto(server.url + "/admin/plans")
    assert _page_width(page) <= WIDTH
    assert page.locator(f'[title="{PLAN_NAME}"]').first.is_visible()

    page.goto(server.url + "/projects")
    page.get_by_role("link", name="Instances").first.click()
    page.wait_for_selector(".instances-table")
    assert _page_width(page) <= WIDTH
    assert page.locator(f'.instances-table [title="{HOSTNAME}"]').is_visible()

    page.locator(f'.instances-table [title="{HOSTNAME}"]').click()
    page.wait_for_selector("#resize")
    assert _page_width(page) <= WIDTH
    overflow = page.evaluate(
        "(() => { const card = document.getElementById('resize');"
        " return card.scrollWidth - card.clientWidth; })()")
    assert overflow <= 0
