"""The operator's console in a real browser, against `appliance serve`: the admin home, the
all-instances list, the Settings page and the Branding page at 1366 px and on a 375 px
phone, with long names that must wrap; a logo uploaded through the Branding form then
shown in the top bar of every page, the sign-in page included. The `page` fixture fails
the test on any console error, which includes a Content-Security-Policy violation (the
accent colour is a stylesheet, never an inline style).
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from appliance import create_app
from appliance.db import database
from appliance.models import User
from appliance.services.instances import nodes
from tests.browser import (
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    served_with_an_admin,
    sign_in,
    submit,
)
from tests.factories import (
    PASSWORD,
    default_project_of,
    make_image,
    make_instance,
    make_node,
    make_plan,
)

pytestmark = pytest.mark.slow

DESKTOP = {"width": 1366, "height": 900}
LONG_NAME = "a-very-long-instance-name-that-must-wrap-on-a-phone-" + "x" * 10
LONG_EMAIL = "someone.with.a.remarkably.long.address.for.testing@subdomain.example.test"
LONG_NODE = "the-node-in-the-basement-cupboard-behind-the-water-heater"


def seed(data) -> None:
    app = create_app({"DATA_DIR": str(data)})
    from appliance.services.accounts import users

    with app.app_context(), database.connection_context():
        users.create_user(LONG_EMAIL, PASSWORD, "Long Name " * 6, verified=True)
        owner = User.get(User.email == LONG_EMAIL)
        node = make_node(LONG_NODE, capacity=nodes.Capacity(2, 8192, 100))
        image = make_image(node)
        plan = make_plan("small", price=2)
        project = default_project_of(owner.id)
        make_instance(project, plan, node, image, name=LONG_NAME)
        make_instance(project, plan, node, image, name="web-2", status="stopped")
    database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-admin-console"), seed)


def logo_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (160, 40), (11, 114, 133)).save(buffer, "PNG")
    return buffer.getvalue()


def wraps(page, selector: str) -> bool:
    """The element is within the viewport's width (its text wrapped or was cut short)."""
    box = page.locator(selector).first.bounding_box()
    return box is not None and box["x"] + box["width"] <= page.viewport_size["width"] + 1


def test_the_admin_console_pages_at_desktop_and_phone_widths(page, server, tmp_path):
    shots = Screenshots("admin-console")
    page.set_viewport_size(DESKTOP)
    sign_in(page, server)

    # Branding first, so every page after shows it.
    page.goto(server.url + "/admin/settings/branding")
    page.get_by_label("Accent colour").fill("#0b7285")
    page.get_by_label("Footer text").fill("Run by the club, for the club")
    assert submit(page, "Save") == 200
    assert "Branding: saved." in page.locator("[data-notice]").inner_text()
    logo = tmp_path / "logo.png"
    logo.write_bytes(logo_png())
    page.locator("#branding-logo input[type=file]").set_input_files(str(logo))
    assert submit(page, "Upload", scope=page.locator("#branding-logo")) == 200
    assert page.locator("header img.brand-logo").count() == 1
    natural = page.evaluate("document.querySelector('header img.brand-logo').naturalWidth")
    assert natural == 160  # the uploaded image itself, served
    accent = page.evaluate("getComputedStyle(document.documentElement)"
                           ".getPropertyValue('--accent').trim()")
    assert accent in ("#0b7285", "#549caa")  # light or dark colour scheme
    shots.take(page, "branding-desktop")

    # An SVG is refused, with the reason next to the field.
    svg = tmp_path / "evil.svg"
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    page.locator("#branding-logo input[type=file]").set_input_files(str(svg))
    assert submit(page, "Upload", scope=page.locator("#branding-logo")) == 400
    assert "SVG images are refused" in page.locator("#e-logo").inner_text()

    pages = {"home": "/admin/", "instances": "/admin/instances",
             "settings": "/admin/settings", "branding": "/admin/settings/branding"}
    for name, path in pages.items():
        page.goto(server.url + path)
        assert page.locator("header img.brand-logo").count() == 1, name
        shots.take(page, f"{name}-desktop")
        assert fits_the_screen(page), name
    page.goto(server.url + "/admin/instances")
    assert page.get_by_text(LONG_NAME).count() >= 1
    assert page.get_by_text(LONG_EMAIL).count() >= 1

    page.set_viewport_size(SMALL_PHONE)
    for name, path in pages.items():
        page.goto(server.url + path)
        shots.take(page, f"{name}-phone")
        assert fits_the_screen(page), name
    page.goto(server.url + "/admin/instances")
    assert wraps(page, f"text={LONG_NAME}")
    page.goto(server.url + "/admin/")
    assert page.get_by_text(LONG_NODE).count() >= 1
    assert fits_the_screen(page)

    # Signed out, the sign-in page has the logo and the footer too.
    page.context.clear_cookies()
    page.set_viewport_size(DESKTOP)
    page.goto(server.url + "/signin")
    assert page.locator("header img.brand-logo").count() == 1
    assert "Run by the club, for the club" in page.locator("footer").inner_text()
    shots.take(page, "signin-branded")
