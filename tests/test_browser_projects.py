"""Projects, the project switcher, API keys, SSH keys and limits in a real browser.

Chromium driven by Playwright against `appliance serve` (see tests/browser.py). The
screenshots of each page, on a desktop and a phone viewport, land in the test output
folder for a human to look at.
"""

from __future__ import annotations

import re

import pytest
import requests

from tests.browser import (
    PASSWORD,
    PHONE,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
    submit,
)
from tests.sshkeys import ED25519

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-projects"))


def create_project_and_switch_to_it(page, server, name: str) -> str:
    """Create the project on /projects, then reach it from another page with the switcher."""
    switcher = page.locator("details.switcher")
    assert switcher.locator(".switcher-name").inner_text() == "Default project"
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Projects",
                                                            exact=True).click()
    page.wait_for_url(server.url + "/projects")
    new = page.locator("#new-project")
    new.get_by_label("Name").fill(name)
    assert submit(page, "Create project", scope=new) == 200
    assert page.get_by_role("heading", level=1).inner_text() == name
    assert page.get_by_text("Project created. You are its owner.").is_visible()
    project_url = page.url.split("?")[0]
    assert re.fullmatch(re.escape(server.url) + r"/projects/prj_\w+", project_url)

    page.goto(server.url + "/dashboard")
    assert switcher.locator(".switcher-name").inner_text() == "Default project"
    switcher.locator("summary").click()
    menu = switcher.locator(".switcher-menu")
    assert menu.is_visible()
    with page.expect_navigation():
        menu.locator("a", has_text=name).click()
    assert page.url == project_url
    assert switcher.locator(".switcher-name").inner_text() == name
    return project_url


def add_a_viewer(page, project_url: str, email: str) -> None:
    """Add a member, then make them a viewer: htmx swaps the members card each time."""
    members = page.locator("#members")
    members.get_by_label("Email of their account").fill(email)
    members.get_by_role("button", name="Add member").click()
    members.get_by_text(f"{email} added as member.").wait_for()
    assert page.url == project_url  # swapped in place, no navigation
    members.get_by_label(f"Role of {email}").select_option("viewer")
    members.get_by_text(f"{email} is now viewer.").wait_for()


def create_a_key_and_copy_it(page, server, project_label: str) -> str:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page.get_by_role("link", name="API keys", exact=True).click()
    page.wait_for_url(server.url + "/keys")
    form = page.locator("#new-key")
    form.get_by_label("Name").fill("CI deploy")
    form.get_by_label("instances:read").check()
    form.get_by_label("usage:read").check()
    form.get_by_label("Project", exact=True).select_option(label=project_label)
    form.get_by_label("30 days").check()
    form.get_by_label("Allowed addresses").fill("127.0.0.1\n10.0.0.0/24")
    assert submit(page, "Create key", scope=form) == 200
    secret = page.locator("#new-secret").input_value()
    assert re.fullmatch(r"sk_[a-z0-9]{8}_[\w-]{32}", secret)
    assert page.get_by_text("This is the only time it is shown").is_visible()
    page.get_by_role("button", name="Copy").click()
    page.get_by_text("Copied to the clipboard.").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    return secret


def add_ssh_keys(page, server) -> None:
    """A malformed key is refused next to the field; a real one is listed."""
    page.goto(server.url + "/account")
    page.get_by_role("link", name="SSH keys").click()
    page.wait_for_url(server.url + "/account/ssh-keys")
    add = page.locator("#add-ssh-key")
    add.get_by_label("Public key").fill("ssh-ed25519 not-base64!")
    assert submit(page, "Add SSH key", scope=add) == 400
    assert "not base64" in add.locator(".error-text").inner_text()
    add.get_by_label("Public key").fill(ED25519[0])
    assert submit(page, "Add SSH key", scope=add) == 200
    assert page.get_by_text(ED25519[1]).is_visible()


def ask_for_more_keys(page, server) -> None:
    page.goto(server.url + "/account/limits")
    ask = page.locator("#ask")
    ask.get_by_label("Resource").select_option("api_keys")
    ask.get_by_label("New limit").fill("40")
    ask.get_by_label("Why (optional)").fill("One key per CI runner.")
    assert submit(page, "Send request", scope=ask) == 200
    assert page.locator("#requests").get_by_text("pending").is_visible()


def test_projects_switcher_and_keys_in_a_browser(page, server):
    shots = Screenshots("projects")
    name = "Lab <b>rack</b>"
    # A second account to add to the project, made over the JSON API.
    signup = requests.post(server.url + "/api/v1/auth/signup", timeout=10, json={
        "email": "grace@example.com", "password": PASSWORD, "display_name": "Grace Hopper"})
    assert signup.status_code == 201, signup.text

    sign_in(page, server)
    project_url = create_project_and_switch_to_it(page, server, name)
    add_a_viewer(page, project_url, "grace@example.com")
    shots.take(page, "project")

    page.goto(server.url + "/projects")
    assert page.locator("table").get_by_role("link", name=name).is_visible()
    shots.take(page, "projects")

    secret = create_a_key_and_copy_it(page, server, f"{name} (owner)")
    item = page.locator(".key-item", has_text="CI deploy")
    assert item.locator(".scopes").inner_text().split() == ["instances:read", "usage:read"]
    assert item.get_by_role("link", name=name).is_visible()
    shots.take(page, "keys-created")

    # The key works over the API, for its project only; the list never shows it again.
    listed = requests.get(server.url + "/api/v1/projects", timeout=10,
                          headers={"Authorization": f"Bearer {secret}"})
    assert listed.status_code == 200
    assert [p["name"] for p in listed.json()["data"]] == [name]
    page.goto(server.url + "/keys")
    assert secret not in page.content()

    add_ssh_keys(page, server)
    shots.take(page, "ssh-keys")
    ask_for_more_keys(page, server)
    shots.take(page, "limits")
    page.goto(server.url + "/admin/limits")
    shots.take(page, "admin-limits")

    # The same pages on a phone: the switcher stays in the top bar, the rest in the menu.
    page.set_viewport_size(PHONE)
    page.goto(project_url)
    assert page.locator("details.switcher summary").is_visible()
    assert fits_the_screen(page)
    shots.take(page, "phone-project")
    page.locator("label.nav-toggle-label").click()
    assert page.get_by_role("link", name="API keys", exact=True).is_visible()
    page.goto(server.url + "/keys")
    assert fits_the_screen(page)
    shots.take(page, "phone-keys")
