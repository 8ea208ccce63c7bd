"""Billing and usage in a real browser, against `appliance serve`.

Three weeks of usage are metered before the server starts (the real metering tick, run
once, catches up every hour since the instances were made), so the charts have something
to draw. Then, as the administrator: make a promo code, redeem it on the billing page,
grant credit with its confirmation, add a low-balance alert with htmx, switch the usage
chart between 7, 30 and 90 days. Screenshots of every page on a desktop and on a 375 px
phone land in the test output folder for a human to look at.
"""

from __future__ import annotations

import datetime as dt

import pytest

from appliance import create_app
from appliance.db import database
from appliance.models import Instance, User
from appliance.services import clock
from appliance.services.billing import ledger, metering
from tests.browser import (
    SMALL_PHONE,
    Screenshots,
    fits_the_screen,
    nav_link,
    served_with_an_admin,
    sign_in,
    submit,
)
from tests.factories import (
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_plan,
)

pytestmark = pytest.mark.slow

DAY = dt.timedelta(days=1)


def seed_usage(data) -> None:
    """A welcome grant and three weeks of metered usage on three instances."""
    app = create_app({"DATA_DIR": str(data)})
    now = clock.now()
    with app.app_context(), database.connection_context():
        user = User.get(User.email == "ada@example.com")
        ledger.post(user.id, "grant", 5000, "grant:seed", note="Welcome credit")
        project = default_project_of(user.id)
        node = make_node()
        image = make_image(node)
        small, large = make_plan("small", price=4, cap=2000), make_plan("large", price=15)
        make_instance(project, small, node, image, created_at=now - 21 * DAY, name="web")
        batch = make_instance(project, large, node, image, created_at=now - 12 * DAY,
                              name="batch")
        make_instance(project, large, node, image, created_at=now - 3 * DAY, name="db")
        delete_instance(batch, now - 8 * DAY)
        metering.tick(now)
        # No live instance is left for the server's engine checks to look for.
        for instance in Instance.select().where(Instance.deleted_at.is_null()):
            delete_instance(instance, now)
    database.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served_with_an_admin(tmp_path_factory.mktemp("browser-billing"), seed_usage)


def make_a_promo_code(page, server) -> None:
    nav_link(page, "Admin").click()
    page.locator(".subnav").get_by_role("link", name="Promo codes", exact=True).click()
    page.wait_for_url(server.url + "/admin/billing/promo-codes")
    form = page.locator("#new-code")
    form.get_by_label("Code").fill("SPRING-25")
    form.get_by_label("Amount (EUR)").fill("12.50")
    form.get_by_label("Uses in all").fill("100")
    assert submit(page, "Create code", scope=form) == 200
    page.get_by_text("Promo code SPRING-25 created.").wait_for()


def redeem_it(page, server, shots: Screenshots) -> None:
    nav_link(page, "Billing").click()
    page.wait_for_url(server.url + "/billing")
    balance_before = page.locator("#balance").inner_text()
    promo = page.locator("#promo")
    promo.get_by_label("Promo code").fill("nope")
    assert submit(page, "Redeem", scope=promo) == 404
    assert page.locator("#promo .error-text").inner_text() == "No such promo code."
    shots.take(page, "promo-refused")
    page.locator("#promo").get_by_label("Promo code").fill(" spring-25 ")
    assert submit(page, "Redeem", scope=page.locator("#promo")) == 200
    page.get_by_text("Promo code redeemed: 12.50 EUR added.").wait_for()
    assert page.locator("#balance").inner_text() != balance_before
    assert page.locator("#ledger").get_by_text("Promo code SPRING-25").is_visible()
    page.locator("#promo").get_by_label("Promo code").fill("spring-25")
    assert submit(page, "Redeem", scope=page.locator("#promo")) == 409
    assert "already redeemed" in page.locator("#promo .error-text").inner_text()


def see_the_chart(page) -> None:
    chart = page.locator("#billing-chart svg.chart-wide")
    assert chart.is_visible()
    assert chart.locator("rect").count() == 30
    assert page.locator("#billing-chart svg.chart-narrow").is_hidden()
    tooltip = chart.locator("rect title").last.text_content()
    assert tooltip.endswith(" EUR") and ": " in tooltip
    # The seeded instances are all deleted: nothing burns now, whatever the history spent.
    assert page.get_by_text("Nothing is using credit now").is_visible()
    assert page.locator("#burn-last-24h").is_visible()


def add_an_alert(page) -> None:
    alerts = page.locator("#alerts")
    page.evaluate("window.notReloaded = true")
    alerts.get_by_label("Alert below (EUR)").fill("20")
    alerts.get_by_role("button", name="Add alert").click()
    alerts.get_by_text("You will be told when the balance falls below 20.00 EUR.").wait_for()
    assert page.evaluate("window.notReloaded === true")  # swapped in by htmx


def grant_with_confirmation(page, server, shots: Screenshots) -> None:
    nav_link(page, "Admin").click()
    page.locator(".subnav").get_by_role("link", name="Billing", exact=True).click()
    page.wait_for_url(server.url + "/admin/billing/")
    page.get_by_role("link", name="ada@example.com").click()
    form = page.locator("#grant")
    form.get_by_label("Amount (EUR)").fill("40")
    form.get_by_label("Note").fill("Thanks for testing")
    assert submit(page, "Review\u2026", scope=form) == 200
    assert page.get_by_text("Post a grant of 40.00 EUR to ada@example.com?").is_visible()
    shots.take(page, "admin-grant-confirm")
    assert submit(page, "Confirm grant") == 200
    page.get_by_text("Grant of 40.00 EUR posted").wait_for()
    shots.take(page, "admin-account")


def switch_usage_days(page, server, shots: Screenshots) -> None:
    page.goto(server.url + "/usage")
    assert page.locator("#usage-chart svg.chart-wide rect").count() == 30
    page.evaluate("window.notReloaded = true")
    page.get_by_role("link", name="7 days").click()
    page.wait_for_url(server.url + "/usage?days=7")
    page.locator("#usage-chart [aria-current='page']", has_text="7 days").wait_for()
    assert page.locator("#usage-chart svg.chart-wide rect").count() == 7
    assert page.evaluate("window.notReloaded === true")
    shots.take(page, "usage-7-days")
    page.get_by_role("link", name="90 days").click()
    page.locator("#usage-chart [aria-current='page']", has_text="90 days").wait_for()
    assert page.locator("#usage-chart svg.chart-wide rect").count() == 90
    assert page.locator("#resources").get_by_text("small").first.is_visible()


def test_billing_and_usage_in_a_browser(page, server):
    shots = Screenshots("billing")
    sign_in(page, server)
    shots.take(page, "overview")
    make_a_promo_code(page, server)
    shots.take(page, "admin-promo-codes")
    redeem_it(page, server, shots)
    see_the_chart(page)
    add_an_alert(page)
    shots.take(page, "billing")
    grant_with_confirmation(page, server, shots)
    switch_usage_days(page, server, shots)
    shots.take(page, "usage-90-days")
    page.goto(server.url + "/admin/billing/settings")
    shots.take(page, "admin-settings")

    page.emulate_media(color_scheme="dark")
    page.goto(server.url + "/billing")
    shots.take(page, "dark-billing")
    page.emulate_media(color_scheme="light")

    # On a 375 px phone: the narrow chart, nothing wider than the screen.
    page.set_viewport_size(SMALL_PHONE)
    for name, path in (("billing", "/billing"), ("usage", "/usage"),
                       ("usage-90", "/usage?days=90"), ("overview", "/dashboard"),
                       ("admin-balances", "/admin/billing/"),
                       ("admin-promo-codes", "/admin/billing/promo-codes"),
                       ("admin-settings", "/admin/billing/settings")):
        page.goto(server.url + path)
        assert fits_the_screen(page), name
        shots.take(page, f"phone-{name}")
    page.goto(server.url + "/billing")
    assert page.locator("#billing-chart svg.chart-narrow").is_visible()
    assert page.locator("#billing-chart svg.chart-wide").is_hidden()
