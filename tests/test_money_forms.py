"""Money typed into the dashboard: every form that takes an amount reads the same text as
the same minor units (or refuses it with the same message), and amounts in a currency
without decimals are shown without them. Real forms, posted through the test client with
the CSRF token, on a real database; the top-up form talks to a local stand-in for Stripe.
"""

from __future__ import annotations

import itertools
import re

import pytest

from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import BillingAccount, BillingAlert, LedgerEntry, Plan, PromoCode
from appliance.services import money
from tests.factories import Browser, make_user
from tests.test_stripe_topup import SECRET_KEY, WEBHOOK_SECRET, StripeStandIn

# What people type, and the cents it means in EUR.
READ_THE_SAME = [("9,50", 950), ("9.50", 950), ("9", 900), ("1 234,56", 123456),
                 ("1234.56", 123456), ("1.234,56", 123456), ("1,234.56", 123456),
                 ("1,05", 105), ("12,5", 1250), ("1\u00a0234,56", 123456)]
# What is refused, everywhere with the same message.
REFUSED = ["9.505", "nine", "1,234", "9,50,5", "12.34.5", "--5", "5e3"]
MESSAGE = "Enter an amount in EUR like 0.05 (at most 2 decimals)."
ERROR = re.compile(r'<p class="error-text" id="e-f-[\w-]*?(\w+)">([^<]*)</p>')

_serial = itertools.count()


@pytest.fixture
def stripe():
    stand_in = StripeStandIn()
    yield stand_in
    stand_in.close()


@pytest.fixture
def app(make_app, stripe):
    return make_app(STRIPE_SECRET_KEY=SECRET_KEY, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
                    STRIPE_API_BASE=stripe.url, BASE_URL="https://panel.example.test")


@pytest.fixture
def people(app):
    return {"ada": make_user(app, "ada@example.test"),
            "root": make_user(app, "root@example.test", role="admin")}


@pytest.fixture
def ada(app, people):
    return Browser(app, "ada@example.test")


@pytest.fixture
def root(app, people):
    return Browser(app, "root@example.test")


def _stored(app, read):
    with app.app_context(), database.connection_context():
        return read()


def _latest_entry(user_id):
    return (LedgerEntry.select().where(LedgerEntry.user == user_id)
            .order_by(LedgerEntry.id.desc()).first().amount)


class Forms:
    """Each money form of the dashboard: post `typed` into it, read back what was stored."""

    def __init__(self, app, ada, root, people, stripe):
        self.app, self.ada, self.root, self.people, self.stripe = app, ada, root, people, stripe

    def grant(self, typed):
        uid = self.people["ada"].id
        answer = self.root.post(f"/admin/billing/accounts/{uid}/credits",
                                {"type": "grant", "amount": typed, "note": "n",
                                 "confirmed": "yes"})
        return answer, "amount", lambda: _latest_entry(uid)

    def adjustment(self, typed):
        uid = self.people["ada"].id
        answer = self.root.post(f"/admin/billing/accounts/{uid}/credits",
                                {"type": "adjustment", "amount": typed, "note": "n",
                                 "confirmed": "yes"})
        return answer, "amount", lambda: _latest_entry(uid)

    def _plan(self, typed, field):
        slug = f"plan-{next(_serial)}"
        values = {"slug": slug, "name": slug, "vcpus": "1", "memory_mb": "256",
                  "disk_gb": "5", "price_hourly": "0.01", "price_monthly_cap": "1",
                  "active": "on", field: typed}
        answer = self.root.post("/admin/plans", values)
        return answer, field, lambda: getattr(Plan.get(Plan.slug == slug), field)

    def plan_price(self, typed):
        return self._plan(typed, "price_hourly")

    def plan_cap(self, typed):
        return self._plan(typed, "price_monthly_cap")

    def promo_amount(self, typed):
        code = f"CODE{next(_serial)}"
        answer = self.root.post("/admin/billing/promo-codes", {"code": code, "amount": typed})
        return answer, "amount", lambda: PromoCode.get(PromoCode.code == code.lower()).amount

    def alert_threshold(self, typed):
        uid = self.people["ada"].id
        _stored(self.app, lambda: BillingAlert.delete().where(BillingAlert.user == uid).execute())
        answer = self.ada.post("/billing/alerts", {"threshold": typed})
        return answer, "threshold", lambda: (
            BillingAlert.select().where(BillingAlert.user == uid)
            .order_by(BillingAlert.id.desc()).first().threshold)

    def spend_cap(self, typed):
        answer = self.ada.post("/billing/settings", {"spend_cap": typed, "invoice_name": "",
                                                     "invoice_address": "", "vat_id": ""})
        uid = self.people["ada"].id
        return answer, "spend_cap", lambda: BillingAccount.get(
            BillingAccount.user == uid).spend_cap

    def top_up(self, typed):
        answer = self.ada.post("/billing/top-up", {"amount": typed})
        return answer, "amount", lambda: int(
            self.stripe.requests[-1]["form"]["line_items[0][price_data][unit_amount]"])

    def _settings(self, **changed):
        values = {"currency": "EUR", "vat_rate_bp": "0", "min_balance": "0",
                  "grace_hours": "24", "low_balance_thresholds": "", "operator_name": "",
                  "operator_address": "", **changed}
        return self.root.post("/admin/billing/settings", values)

    def minimum_balance(self, typed):
        from appliance.services.billing import billing_state

        answer = self._settings(min_balance=typed)
        return answer, "min_balance", lambda: billing_state.operator_settings().min_balance

    def low_balance_threshold(self, typed):
        from appliance.services.billing import billing_state

        answer = self._settings(low_balance_thresholds=typed)
        return answer, "low_balance_thresholds", lambda: (
            billing_state.operator_settings().low_balance_thresholds[0])


FORMS = ["grant", "adjustment", "plan_price", "plan_cap", "promo_amount", "alert_threshold",
         "spend_cap", "top_up", "minimum_balance", "low_balance_threshold"]


@pytest.fixture
def forms(app, ada, root, people, stripe):
    return Forms(app, ada, root, people, stripe)


@pytest.mark.parametrize("form", FORMS)
def test_every_money_form_reads_the_same_text_as_the_same_minor_units(app, forms, form):
    for typed, cents in READ_THE_SAME:
        answer, _, read = getattr(forms, form)(typed)
        assert answer.status_code in (302, 303), (form, typed, answer.get_data(as_text=True)[:500])
        assert _stored(app, read) == cents, (form, typed)


@pytest.mark.parametrize("form", FORMS)
def test_every_money_form_refuses_the_same_text_with_the_same_message(forms, form):
    for typed in REFUSED:
        answer, field, _ = getattr(forms, form)(typed)
        assert answer.status_code == 400, (form, typed)
        shown = dict((name, text) for name, text in ERROR.findall(answer.get_data(as_text=True)))
        message = shown.get(field)
        if form == "low_balance_threshold":  # a list: its message says how to separate
            assert message and "separated by commas" in message, (form, typed, shown)
        else:
            assert message == MESSAGE, (form, typed, shown)


def test_the_money_module_reads_and_shows_each_currencys_decimals():
    assert money.parse("1 234", "JPY", field="x") == 1234
    assert money.parse("1,234", "JPY", field="x") == 1234  # no decimals: only grouping
    assert money.parse("1,234", "KWD", field="x") == 1234  # three decimals: 1.234 KWD
    assert money.parse("-5,25", "EUR", field="x", allow_negative=True) == -525
    for typed, currency in (("9,5", "JPY"), ("1,2345", "KWD"), ("-5", "EUR"), ("", "EUR")):
        with pytest.raises(InvalidRequest) as refused:
            money.parse(typed, currency, field="amount")
        assert refused.value.details["field"] == "amount"
    assert money.format(123456, "JPY") == "123,456 JPY"
    assert money.format(123456, "EUR") == "1,234.56 EUR"
    assert money.format(-1234, "KWD") == "-1.234 KWD"
    assert (money.major(950, "JPY"), money.major(950, "EUR")) == ("950", "9.50")
    assert (money.step("JPY"), money.step("EUR"), money.step("KWD")) == ("1", "0.01", "0.001")


def test_yen_amounts_show_without_decimals_on_the_pages(app, forms, ada, root, people):
    assert forms._settings(currency="JPY").status_code == 302
    answer, _, _ = forms.grant("1 500")
    assert answer.status_code == 302
    assert "Grant of 1,500 JPY posted" in root.page(answer.headers["Location"])
    billing = ada.page("/billing")
    assert "1,500 JPY" in billing and "15.00" not in billing
    answer, _, read = forms.plan_price("950")
    assert answer.status_code == 302 and _stored(app, read) == 950
    plans = root.page("/admin/plans")
    assert 'value="950"' in plans and "9.50" not in plans
    refused, field, _ = forms.plan_price("9,50")
    assert refused.status_code == 400
    assert dict(ERROR.findall(refused.get_data(as_text=True)))[field] == (
        "Enter an amount in JPY like 5 (JPY has no decimals).")
