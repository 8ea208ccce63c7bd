"""Defects of the dashboard seen in a real browser (the defects issue).

- The main pages, signed out, signed in and as the administrator, break no rule of the
  Content-Security-Policy: Chromium logs "Refused to ..." for every violation, which
  `tests.browser.PageProblems` (the `page` fixture) collects and counts as an error.
- The longest names the services accept (projects.NAME_MAX, api_keys.NAME_MAX,
  endpoints.URL_MAX) keep every page as wide as the screen, on a laptop and a phone.
- A notice ("Project created.") is shown once: not after a later action, not on reload.
"""

from __future__ import annotations

import pytest
import requests

from appliance import create_app
from appliance.db import database
from appliance.models import User
from appliance.services import projects
from appliance.services.accounts import api_keys
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints
from tests.browser import (
    ADMIN_EMAIL,
    PASSWORD,
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
    submit,
)
from tests.factories import default_project_of, make_image, make_instance, make_node, make_plan

pytestmark = pytest.mark.slow

LAPTOP = {"width": 1366, "height": 900}
LONG_PROJECT = "W" * projects.NAME_MAX  # no space to break at: the worst case
SPACED_PROJECT = ("Quarterly infrastructure migration for the northern region data "
                  "centres and backups")[:projects.NAME_MAX]
LONG_KEY = "K" * api_keys.NAME_MAX
LONG_URL = "http://127.0.0.1:9/" + "h" * (endpoints.URL_MAX - len("http://127.0.0.1:9/"))


def seed(data) -> None:
    """An instance on a simulated node, and the longest names the services accept."""
    app = create_app({"DATA_DIR": str(data)})
    with app.app_context(), database.connection_context(), pytest.MonkeyPatch.context() as mp:
        # The webhook points at a closed local port; the SSRF guard refuses loopback.
        from appliance.services.webhooks import ssrf  # only this seed needs it
        mp.setattr(ssrf, "_refusal", lambda address, allow_private: None)
        user = User.get(User.email == ADMIN_EMAIL)
        me = Principal(user, None, "session")
        node = make_node()
        make_instance(default_project_of(user.id), make_plan("small"), node, make_image(node))
        long_project = projects.create_project(me, LONG_PROJECT).project
        projects.create_project(me, SPACED_PROJECT)
        api_keys.create_key(me, LONG_KEY, ["usage:read"], project_id=long_project.id)
        webhook = endpoints.create_webhook(me, LONG_URL, description="D" * 500).webhook
        endpoints.pause_webhook(me, webhook.id)  # nothing is sent to it
    database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-defects"), seed)


def _ids(page, server) -> dict[str, str]:
    """The ids the walk needs, read from the pages as a user would find them."""
    page.goto(server.url + "/projects")
    long_href = page.locator("table a", has_text=LONG_PROJECT).get_attribute("href")
    default_href = page.locator("table a", has_text="Default project").get_attribute("href")
    page.goto(server.url + default_href + "/instances")
    instance_href = page.locator("#instance-list tbody a").first.get_attribute("href")
    page.goto(server.url + "/webhooks")
    webhook_href = page.locator("table a").first.get_attribute("href")
    return {"long": long_href, "default": default_href, "instance": instance_href,
            "webhook": webhook_href}


def test_the_main_pages_break_no_rule_of_the_content_security_policy(page, server):
    shots = Screenshots("defects-csp")
    for path in ("/", "/signin", "/signup", "/docs/api"):
        page.goto(server.url + path)
        page.wait_for_load_state("load")
    sign_in(page, server)
    ids = _ids(page, server)
    paths = ["/dashboard", "/projects", ids["long"], ids["default"] + "/instances",
             ids["default"] + "/instances/new", ids["instance"], ids["default"] + "/backups",
             "/keys", "/webhooks", ids["webhook"], "/events", "/billing", "/billing/invoices",
             "/usage", "/account", "/account/ssh-keys", "/account/limits", "/notifications",
             "/admin/users", "/admin/invites", "/admin/limits", "/admin/mail", "/admin/audit",
             "/admin/nodes", "/admin/plans", "/admin/apps", "/admin/images",
             "/admin/billing/", "/admin/billing/settings", "/admin/billing/promo-codes"]
    for path in paths:
        response = page.goto(server.url + path)
        assert response.status == 200, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
        assert page.evaluate("window.htmx && window.htmx.config.includeIndicatorStyles") is False
    shots.take(page, "admin-billing-settings")
    # Scripts of the pages still work under the policy: the key form's date sets "On a
    # date", the deliveries filter submits itself, the copy button appears.
    page.goto(server.url + "/keys")
    page.get_by_label("Expiry date").fill("2031-01-31")
    assert page.get_by_label("On a date").is_checked()
    form = page.locator("#new-key")
    form.get_by_label("Name").fill("csp check")
    form.get_by_label("usage:read").check()
    assert submit(page, "Create key", scope=form) == 200
    assert page.get_by_role("button", name="Copy").is_visible()
    shots.take(page, "key-created")
    page.goto(server.url + ids["webhook"])
    with page.expect_navigation():
        page.locator("#f-status").select_option("failed")
    assert "status=failed" in page.url
    # PageProblems (the page fixture) fails the test on any "Refused to ..." message.


def test_a_notice_is_shown_once(page, server):
    signup = requests.post(server.url + "/api/v1/auth/signup", timeout=10, json={
        "email": "grace@example.com", "password": PASSWORD, "display_name": "Grace"})
    assert signup.status_code == 201, signup.text
    sign_in(page, server)
    page.goto(server.url + "/projects")
    new = page.locator("#new-project")
    new.get_by_label("Name").fill("Notice check")
    assert submit(page, "Create project", scope=new) == 200
    notice = page.get_by_text("Project created. You are its owner.")
    assert notice.is_visible()
    assert "notice=" not in page.url  # a reload or a copied link does not bring it back
    members = page.locator("#members")
    members.get_by_label("Email of their account").fill("grace@example.com")
    members.get_by_role("button", name="Add member").click()
    members.get_by_text("grace@example.com added as member.").wait_for()
    assert notice.count() == 0  # a later action replaced it
    page.reload()
    assert page.get_by_text("Project created.").count() == 0


@pytest.mark.parametrize("viewport", [LAPTOP, SMALL_PHONE], ids=["1366", "375"])
def test_the_longest_names_keep_pages_as_wide_as_the_screen(page, server, viewport):
    shots = Screenshots(f"defects-width-{viewport['width']}")
    page.set_viewport_size(viewport)
    sign_in(page, server)
    ids = _ids(page, server)
    for name, path in (("projects", "/projects"), ("project", ids["long"]),
                       ("keys", "/keys"), ("webhooks", "/webhooks"),
                       ("webhook", ids["webhook"]), ("account", "/account")):
        page.goto(server.url + path)
        shots.take(page, name)
        assert fits_the_screen(page), (path, page.evaluate(
            "document.documentElement.scrollWidth"))
    # The top bar's project switcher, open, on the long project's page.
    page.goto(server.url + ids["long"])
    page.locator("details.switcher summary").click()
    assert page.locator(".switcher-menu").is_visible()
    shots.take(page, "switcher")
    assert fits_the_screen(page)
    assert page.locator(".switcher-name").get_attribute("title") == LONG_PROJECT
    assert page.locator("h1").get_attribute("title") is None  # the heading wraps instead
    box = page.locator(".switcher-menu").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"]
    page.goto(server.url + "/projects")
    name = page.locator("table a strong", has_text=LONG_PROJECT)
    assert name.get_attribute("title") == LONG_PROJECT
