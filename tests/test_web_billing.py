"""Dashboard pages for billing and usage, and the operator's billing pages (test client on
a real database; usage made by the real metering tick with the clock moved)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest

from appliance.db import database
from appliance.models import BillingAlert, LedgerEntry, PromoCode
from appliance.services import clock
from appliance.services.billing import metering
from appliance.web import charts
from tests.factories import (
    EVIL,
    EVIL_ESCAPED,
    T0,
    Browser,
    default_project_of,
    make_image,
    make_instance,
    make_node,
    make_plan,
    make_user,
)

H = dt.timedelta(hours=1)


@pytest.fixture
def app(make_app):
    # The tests move the clock by hours; the browser session must outlive them.
    return make_app(SESSION_IDLE_MINUTES=10_000)


@pytest.fixture
def users(app):
    """This module's people (`ada` signs in as the first): made at T0, Ada's name is
    markup, and the administrator is among them."""
    clock.freeze(T0)
    return {"ada": make_user(app, "ada@example.test", display_name=EVIL),
            "eve": make_user(app, "eve@example.test"),
            "root": make_user(app, "root@example.test", role="admin")}


@pytest.fixture
def root(app, users):
    return Browser(app, "root@example.test")


def _grant(root, user, amount: str, note: str = "welcome", kind: str = "grant"):
    response = root.post(f"/admin/billing/accounts/{user.id}/credits",
                         {"type": kind, "amount": amount, "note": note, "confirmed": "yes"})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return response


def _run_usage(app, user, hours: int = 5, price: int = 100) -> None:
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        make_instance(default_project_of(user.id), make_plan(price=price), node, image)
        metering.tick()
        clock.advance(hours * H)
        metering.tick()


def _balance(app, user) -> int:
    with app.app_context():
        entry = (LedgerEntry.select().where(LedgerEntry.user == user.id)
                 .order_by(LedgerEntry.id.desc()).first())
        return entry.balance_after if entry else 0


def _field_error(html: str, name: str) -> str:
    """The message shown under the field `name` (the form's id ends with it)."""
    match = re.search(rf'<p class="error-text" id="e-f-[\w-]*{name}">([^<]*)</p>', html)
    assert match, f"no error under {name}"
    return match.group(1)


# The billing page ---------------------------------------------------------------------


def test_the_billing_page_shows_balance_run_out_burn_rate_chart_and_ledger(app, ada, root,
                                                                             users):
    _grant(root, users["ada"], "100.00")
    _run_usage(app, users["ada"], hours=5, price=100)
    html = ada.page("/billing")
    assert 'id="balance">94.00 EUR<' in html  # six started hours of 1.00
    assert "Credits last about 4 days" in html  # 94.00 at the 1.00 an hour running now
    assert "24.00 EUR" in html  # the burn rate per day at what runs now
    assert "6.00 EUR" in html  # the last 24 hours and month to date
    assert html.count("<svg") == 3  # the header's bell, the desktop and the phone chart
    assert re.search(r"<title>\w{3} 10 Mar 2025: 6.00 EUR</title>", html)
    assert 'viewBox="0 0 760 250"' in html and 'viewBox="0 0 320 210"' in html
    assert "welcome" in html and "+100.00 EUR" in html and "-1.00 EUR" in html
    assert 'href="/billing/statement.csv"' in html
    assert "/billing/invoices" in html
    assert "badge-ok\">ready" in html
    statement = ada.get("/billing/statement.csv")
    assert statement.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(statement.get_data(as_text=True))))
    assert rows[0]["type"] == "grant" and len(rows) == 7


def test_the_ledger_pages_newest_first_and_htmx_gets_only_the_table(app, ada, root, users):
    for number in range(23):
        _grant(root, users["ada"], "1", note=f"gift {number}")
    html = ada.page("/billing")
    assert "gift 22" in html and "gift 3" in html and "gift 2<" not in html
    older = re.search(r'href="(/billing\?cursor=[^"#]+)#ledger-card"', html).group(1)
    fragment = ada.get(older.replace("&amp;", "&") + "&part=ledger",
                       headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in fragment and 'id="ledger"' in fragment
    assert "gift 2<" in fragment and "gift 0" in fragment and "gift 22" not in fragment


def test_a_balance_below_the_minimum_blocks_provisioning_and_shows_why(app, ada, root):
    response = root.post("/admin/billing/settings", {
        "currency": "EUR", "vat_rate_bp": "0", "min_balance": "5.00", "grace_hours": "72",
        "low_balance_thresholds": "", "operator_name": "", "operator_address": ""})
    assert response.status_code == 302
    html = ada.page("/billing")
    assert "badge-danger\">blocked" in html
    assert "below the minimum to provision: add 5.00 EUR" in html


def test_a_suspended_account_sees_the_banner(app, ada, users):
    from appliance.models import BillingAccount

    with app.app_context():
        BillingAccount.insert(user=users["ada"].id, created_at=clock.now(),
                              updated_at=clock.now(), suspended_at=clock.now(),
                              suspended_reason="balance").execute()
    html = ada.page("/billing")
    assert "Your account is suspended" in html and 'id="billing-status"' in html
    assert "Your account is suspended" in ada.page("/dashboard")


# Promo codes --------------------------------------------------------------------------


def _make_code(root, code: str, amount: str = "10", **extra):
    response = root.post("/admin/billing/promo-codes", {
        "code": code, "amount": amount, "once_per_user": "on", **extra})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]


def test_a_promo_code_is_redeemed_once_and_each_refusal_says_why(app, ada, root, users):
    _make_code(root, "WELCOME", "10")
    response = ada.post("/billing/promo", {"code": "  Welcome "})
    assert response.status_code == 302
    html = ada.page(response.headers["Location"])
    assert "Promo code redeemed: 10.00 EUR added." in html
    assert 'id="balance">10.00 EUR<' in html and "Promo code WELCOME" in html

    refusals = {"welcome": (409, "You have already redeemed this promo code."),
                "nope": (404, "No such promo code."),
                "": (400, "Enter a promo code.")}
    _make_code(root, "old", expires_at="2025-03-01")
    refusals["old"] = (409, "This promo code has expired.")
    _make_code(root, "paused")
    with app.app_context():
        paused = PromoCode.get(PromoCode.code == "paused")
    assert root.post(f"/admin/billing/promo-codes/{paused.id}/active", {}).status_code == 302
    refusals["paused"] = (409, "This promo code is no longer active.")
    _make_code(root, "one", max_uses="1")
    eve = Browser(app, "eve@example.test")
    assert eve.post("/billing/promo", {"code": "one"}).status_code == 302
    refusals["one"] = (409, "This promo code has been used up.")
    for code, (status, message) in refusals.items():
        response = ada.post("/billing/promo", {"code": code})
        html = response.get_data(as_text=True)
        assert response.status_code == status, code
        assert _field_error(html, "code") == message
        assert f'value="{code}"' in html  # what was typed stays in the field
    assert _balance(app, users["ada"]) == 1000


# Alerts and settings ------------------------------------------------------------------


def test_alerts_are_added_refused_and_deleted_with_htmx_or_without(app, ada, users):
    response = ada.post("/billing/alerts", {"threshold": "5.50"})
    assert response.status_code == 302 and response.headers["Location"].endswith("#alerts")
    html = ada.page("/billing")
    assert "Below <strong class=\"nowrap\">5.50 EUR</strong>" in html
    again = ada.post("/billing/alerts", {"threshold": "5.5"}, headers={"HX-Request": "true"})
    assert again.status_code == 409 and again.headers["X-Error-Fragment"] == "1"
    fragment = again.get_data(as_text=True)
    assert "<html" not in fragment
    assert _field_error(fragment, "threshold") == "You already have an alert at this threshold."
    bad = ada.post("/billing/alerts", {"threshold": "lots"})
    assert bad.status_code == 400
    assert _field_error(bad.get_data(as_text=True), "threshold").startswith("Enter an amount")
    added = ada.post("/billing/alerts", {"threshold": "2"}, headers={"HX-Request": "true"})
    assert added.status_code == 200 and "2.00 EUR" in added.get_data(as_text=True)
    with app.app_context():
        alert = BillingAlert.get(BillingAlert.threshold == 550)
    deleted = ada.post(f"/billing/alerts/{alert.id}/delete", headers={"HX-Request": "true"})
    assert deleted.status_code == 200 and "Alert deleted." in deleted.get_data(as_text=True)
    assert "5.50 EUR" not in deleted.get_data(as_text=True)
    # Someone else's alert is not found.
    eve = Browser(app, "eve@example.test")
    with app.app_context():
        other = BillingAlert.get(BillingAlert.threshold == 200)
    assert eve.post(f"/billing/alerts/{other.id}/delete").status_code == 404


def test_billing_settings_save_show_escaped_and_name_the_bad_field(app, ada):
    response = ada.post("/billing/settings", {
        "spend_cap": "12.50", "invoice_name": EVIL, "invoice_address": "1 Road\n" + EVIL,
        "vat_id": "de 123"})
    assert response.status_code == 302
    html = ada.page("/billing")
    assert 'value="12.50"' in html and "of a 12.50 EUR spend cap" in html
    assert EVIL_ESCAPED in html and EVIL not in html
    assert 'value="DE123"' in html
    bad = ada.post("/billing/settings", {"spend_cap": "1.234", "invoice_name": "x"})
    assert bad.status_code == 400
    assert "at most 2 decimals" in _field_error(bad.get_data(as_text=True), "spend_cap")
    long = ada.post("/billing/settings", {"spend_cap": "", "vat_id": "X" * 41})
    assert long.status_code == 400
    assert _field_error(long.get_data(as_text=True), "vat_id") == (
        "vat_id has at most 40 characters.")


def test_a_form_without_the_csrf_token_is_refused(app, ada):
    response = ada.client.post("/billing/promo", data={"code": "x"})
    assert response.status_code == 403


# Usage --------------------------------------------------------------------------------


def test_the_usage_page_draws_7_30_or_90_days_and_exports_csv(app, ada, root, users):
    _grant(root, users["ada"], "50")
    _run_usage(app, users["ada"], hours=3, price=250)
    html = ada.page("/usage")
    assert html.count("<svg") == 3 and html.count("<rect") == 60  # with the bell
    assert "10.00 EUR" in html  # four started hours of 2.50: the card, the table, the chart
    assert "<code>std</code>" in html and "instance" in html
    assert 'href="/usage/export.csv"' in html
    week = ada.page("/usage?days=7")
    assert week.count("<rect") == 14 and 'aria-current="page">7 days' in week
    assert ada.page("/usage?days=1000").count("<rect") == 60  # not offered: 30
    fragment = ada.get("/usage?days=90&part=chart", headers={"HX-Request": "true"})
    text = fragment.get_data(as_text=True)
    assert "<html" not in text and text.count("<rect") == 180
    export = ada.get("/usage/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.get_data(as_text=True))))
    assert len(rows) == 4 and {r["amount"] for r in rows} == {"250"}


def test_the_overview_has_balance_month_and_instance_cards(app, ada, root, users):
    _grant(root, users["ada"], "20")
    _run_usage(app, users["ada"], hours=1, price=100)
    html = ada.page("/dashboard")
    assert 'id="overview-cards"' in html
    assert "18.00 EUR" in html and "2.00 EUR" in html
    assert re.search(r'Instances</h2>\s*<p class="stat-value">1</p>', html)


# The operator's pages -----------------------------------------------------------------


ADMIN_PAGES = ("/admin/billing/", "/admin/billing/promo-codes", "/admin/billing/settings")


def test_the_operator_pages_are_for_administrators_only(app, ada, users):
    for path in ADMIN_PAGES:
        assert ada.get(path).status_code == 403, path
    assert ada.get(f"/admin/billing/accounts/{users['ada'].id}").status_code == 403
    for path, data in ((f"/admin/billing/accounts/{users['ada'].id}/credits",
                        {"amount": "100", "note": "me", "confirmed": "yes"}),
                       ("/admin/billing/promo-codes", {"code": "free", "amount": "99"}),
                       ("/admin/billing/settings", {"currency": "EUR"})):
        assert ada.post(path, data).status_code == 403, path
    assert _balance(app, users["ada"]) == 0
    signed_out = app.test_client().get("/admin/billing/")
    assert signed_out.status_code == 302 and "/signin" in signed_out.headers["Location"]


def test_a_grant_is_confirmed_before_it_is_posted(app, root, users):
    path = f"/admin/billing/accounts/{users['ada'].id}/credits"
    review = root.post(path, {"type": "grant", "amount": "25.00", "note": EVIL})
    html = review.get_data(as_text=True)
    assert review.status_code == 200 and "Confirm grant" in html
    assert "The balance goes from 0.00 EUR to 25.00 EUR" in html
    assert EVIL_ESCAPED in html and EVIL not in html
    assert _balance(app, users["ada"]) == 0
    assert root.post(path, {"type": "grant", "amount": "25.00", "note": EVIL,
                            "confirmed": "yes"}).status_code == 302
    assert _balance(app, users["ada"]) == 2500
    page = root.page(f"/admin/billing/accounts/{users['ada'].id}")
    assert 'id="balance">25.00 EUR<' in page and EVIL_ESCAPED in page
    taken = root.post(path, {"type": "adjustment", "amount": "-5", "note": "fix",
                             "confirmed": "yes"})
    assert taken.status_code == 302 and _balance(app, users["ada"]) == 2000
    for data, field, message in (
            ({"type": "grant", "amount": "-5", "note": "x"}, "amount", "zero or more"),
            ({"type": "grant", "amount": "5", "note": " "}, "note", "Say why"),
            ({"type": "grant", "amount": "99999999999", "note": "x", "confirmed": "yes"},
             "amount", "at most")):
        response = root.post(path, data)
        assert response.status_code == 400
        assert message in _field_error(response.get_data(as_text=True), field)
    assert root.get("/admin/billing/accounts/usr_missing").status_code == 404


def test_the_balances_overview_searches_by_email(app, root, users):
    _grant(root, users["eve"], "3")
    html = root.page("/admin/billing/")
    assert "ada@example.test" in html and "eve@example.test" in html
    assert EVIL_ESCAPED in html and EVIL not in html  # ada's display name
    found = root.get("/admin/billing/?q=eve&part=table", headers={"HX-Request": "true"})
    text = found.get_data(as_text=True)
    assert "<html" not in text and "eve@example.test" in text and "3.00 EUR" in text
    assert "ada@example.test" not in text


def test_promo_codes_are_listed_deactivated_and_deleted_when_unused(app, root, ada):
    _make_code(root, "Spring-25", "7.50", max_uses="100", note=EVIL)
    html = root.page("/admin/billing/promo-codes")
    assert "SPRING-25" in html and "7.50 EUR" in html and "0 of 100" in html
    assert EVIL_ESCAPED in html and EVIL not in html
    taken = root.post("/admin/billing/promo-codes", {"code": "spring-25", "amount": "1"})
    assert taken.status_code == 409
    assert _field_error(taken.get_data(as_text=True), "code").startswith("A promo code with")
    bad = root.post("/admin/billing/promo-codes", {"code": "x", "amount": "1"})
    assert bad.status_code == 400 and "3-60" in _field_error(bad.get_data(as_text=True), "code")
    with app.app_context():
        code = PromoCode.get(PromoCode.code == "spring-25")
    assert ada.post("/billing/promo", {"code": "spring-25"}).status_code == 302
    refused = root.post(f"/admin/billing/promo-codes/{code.id}/delete")
    assert refused.status_code == 409 and "deactivate it instead" in refused.get_data(
        as_text=True)
    assert root.post(f"/admin/billing/promo-codes/{code.id}/active").status_code == 302
    assert "badge-off\">inactive" in root.page("/admin/billing/promo-codes")
    _make_code(root, "unused")
    with app.app_context():
        unused = PromoCode.get(PromoCode.code == "unused")
    assert root.post(f"/admin/billing/promo-codes/{unused.id}/delete").status_code == 302
    with app.app_context():
        assert not PromoCode.select().where(PromoCode.code == "unused").exists()


def test_the_operator_billing_settings_save_and_name_the_bad_field(app, root):
    response = root.post("/admin/billing/settings", {
        "currency": "chf", "vat_rate_bp": "7.7", "min_balance": "2.50", "grace_hours": "24",
        "low_balance_thresholds": "10, 2.5", "operator_name": EVIL,
        "operator_address": "Bahnhofstrasse 1"})
    assert response.status_code == 302
    html = root.page("/admin/billing/settings")
    for value in ('value="CHF"', 'value="7.7"', 'value="2.50"', 'value="24"',
                  'value="10.00, 2.50"', "Bahnhofstrasse 1"):
        assert value in html, value
    assert EVIL_ESCAPED in html and EVIL not in html
    base = {"currency": "EUR", "vat_rate_bp": "20", "min_balance": "0", "grace_hours": "1"}
    for field, value, message in (("currency", "EURO", "three-letter"),
                                  ("vat_rate_bp", "120", "BILLING_VAT_RATE_BP"),
                                  ("vat_rate_bp", "1.234", "two decimals"),
                                  ("grace_hours", "lots", "whole number"),
                                  ("min_balance", "", "Enter an amount"),
                                  ("low_balance_thresholds", "5, x", "separated by commas")):
        bad = root.post("/admin/billing/settings", {**base, field: value})
        assert bad.status_code == 400, (field, value)
        assert message in _field_error(bad.get_data(as_text=True), field), (field, value)


# The chart geometry -------------------------------------------------------------------


def test_the_chart_scales_to_round_amounts_and_labels_today():
    days = [dt.date(2025, 3, 1) + dt.timedelta(days=n) for n in range(30)]
    chart = charts.bar_chart([(d, 130 * n) for n, d in enumerate(days)], "EUR", charts.WIDE)
    assert [t.label for t in chart.value_ticks] == ["0", "10", "20", "30", "40"]
    assert chart.day_ticks[-1].label == "30 Mar" and len(chart.day_ticks) <= 8
    assert all(chart.left <= bar.x and bar.x + bar.width <= chart.right for bar in chart.bars)
    assert chart.bars[0].height == 0 and chart.bars[1].height >= 1.5
    assert chart.bars[-1].tooltip == "Sun 30 Mar 2025: 37.70 EUR"
    empty = charts.bar_chart([(d, 0) for d in days], "JPY", charts.NARROW)
    assert empty.empty and [t.label for t in empty.value_ticks] == ["0", "1"]
    assert charts.axis_amount(150, "EUR") == "1.5" and charts.axis_amount(1500, "JPY") == "1,500"
    assert charts.nice_step(1) == 1 and charts.nice_step(4000) == 1000
    assert charts.nice_step(4100) == 2000


def test_the_top_up_form_shows_only_when_stripe_is_configured(make_app, ada):
    assert 'id="top-up"' not in ada.page("/billing")
    stripe_app = make_app(STRIPE_SECRET_KEY="sk_test_x", SESSION_IDLE_MINUTES=10_000)
    html = Browser(stripe_app, "ada@example.test").page("/billing")
    assert 'id="top-up"' in html and 'action="/billing/top-up"' in html
    assert 'min="1.00"' in html and "Continue to payment" in html
