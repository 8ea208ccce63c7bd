"""Monthly invoices: one per account and month, gap-free numbers, immutable, PDF and CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import subprocess
import threading

import pytest
from peewee import IntegrityError
from pypdf import PdfReader

from appliance.db import database
from appliance.models import (
    BillingAccount,
    Event,
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    InvoiceRun,
)
from appliance.services import clock
from appliance.services.billing import billing_state, invoices, ledger, metering
from tests.factories import (
    EVIL,
    EVIL_ESCAPED,
    Browser,
    api,
    bearer,
    create_key,
    default_project_of,
    delete_instance,
    key_auth,
    login,
    make_image,
    make_instance,
    make_node,
    make_plan,
    make_user,
)

MARCH = dt.datetime(2025, 3, 10, 12, 30, tzinfo=dt.UTC)
APRIL_1 = dt.datetime(2025, 4, 1, 0, 20, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


@pytest.fixture
def people(app):
    users = {}
    for days, name in ((7, "ada"), (6, "bob"), (5, "cy")):  # the oldest account is ada's
        clock.freeze(MARCH - dt.timedelta(days=days))
        users[name] = make_user(app, f"{name}@example.test", display_name=name.title())
    clock.freeze(MARCH)
    return users


@pytest.fixture
def world(app, people):
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        yield {"node": node, "image": image, **people}


def _instance(world, user, plan, **kwargs):
    return make_instance(default_project_of(world[user].id), plan, world["node"],
                         world["image"], **kwargs)


def _numbers():
    return [i.number for i in Invoice.select().order_by(Invoice.year, Invoice.sequence)]


def test_a_month_boundary_issues_one_invoice_per_account_with_the_next_numbers(world):
    plan = make_plan(price=100, cap=50_000)
    _instance(world, "ada", plan)
    _instance(world, "bob", plan)
    ledger.post(world["cy"].id, "grant", 500, "grant:cy")  # activity without usage
    metering.tick()
    clock.freeze(APRIL_1 - H)
    assert invoices.generate_due().issued == 0  # March has not ended
    clock.freeze(APRIL_1)
    result = invoices.generate_due()
    assert (result.periods, result.issued) == (("2025-03",), 3)
    assert _numbers() == ["2025-000001", "2025-000002", "2025-000003"]
    by_user = {i.user_id: i for i in Invoice.select()}
    ada = by_user[world["ada"].id]
    assert ada.number == "2025-000001"  # the oldest account first
    assert (ada.period_start, ada.period_end) == (dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
                                                  dt.datetime(2025, 4, 1, tzinfo=dt.UTC))
    # 12:00 on the 10th to 23:00 on the 31st: 22 days minus 12 hours = 516 hours.
    [line] = invoices.lines_of(ada)
    assert (line.resource, line.sku, line.hours, line.unit_price, line.amount,
            line.cap_applied) == ("instance", "std", 516, 100, 51_600 - 1_600, True)
    assert (ada.total, ada.credits_applied, ada.amount_due) == (50_000, 50_000, 0)
    assert invoices.lines_of(by_user[world["cy"].id]) == []
    assert by_user[world["cy"].id].total == 0

    # Again, and again after more hours: nothing more for March.
    assert invoices.generate_due().issued == 0
    clock.advance(5 * H)
    assert invoices.generate_due().issued == 0
    assert Invoice.select().count() == 3

    # May 1st: April's invoices continue the numbers (cy had no activity in April).
    clock.freeze(dt.datetime(2025, 5, 1, 3, tzinfo=dt.UTC))
    assert invoices.generate_due().issued == 2
    assert _numbers()[3:] == ["2025-000004", "2025-000005"]
    april = Invoice.get(Invoice.user == world["bob"].id,
                        Invoice.period_start == dt.datetime(2025, 4, 1, tzinfo=dt.UTC))
    assert [line.hours for line in invoices.lines_of(april)] == [720]


def test_a_new_year_starts_at_number_one(world):
    clock.freeze(dt.datetime(2025, 12, 30, tzinfo=dt.UTC))
    _instance(world, "ada", make_plan(price=10))
    metering.tick()
    clock.freeze(dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC))
    assert invoices.generate_due().issued == 1
    clock.freeze(dt.datetime(2026, 2, 1, 0, 5, tzinfo=dt.UTC))
    assert invoices.generate_due().issued == 1
    assert _numbers() == ["2026-000001", "2026-000002"]
    december = Invoice.get(Invoice.number == "2026-000001")
    assert december.period_start == dt.datetime(2025, 12, 1, tzinfo=dt.UTC)


def test_months_missed_while_down_are_issued_in_order(world):
    _instance(world, "ada", make_plan(price=1))
    metering.tick()
    clock.freeze(dt.datetime(2025, 6, 2, tzinfo=dt.UTC))
    result = invoices.generate_due()
    assert result.periods == ("2025-03", "2025-04", "2025-05")
    assert [(i.number, i.period_start.month) for i in
            Invoice.select().order_by(Invoice.sequence)] == [
        ("2025-000001", 3), ("2025-000002", 4), ("2025-000003", 5)]


def test_one_line_per_resource_and_sku_with_the_cap_flag(world):
    small, large = make_plan("small", price=10, cap=10_000), make_plan("large", price=50,
                                                                      cap=400)
    first = _instance(world, "ada", small)
    _instance(world, "ada", small)
    big = _instance(world, "ada", large)
    metering.tick()
    clock.advance(9 * H)
    delete_instance(first, clock.now())
    delete_instance(big, clock.now())
    metering.tick()
    clock.freeze(APRIL_1)
    invoices.generate_due()
    invoice = Invoice.get(Invoice.user == world["ada"].id)
    lines = [(line.sku, line.hours, line.unit_price, line.amount, line.cap_applied)
             for line in invoices.lines_of(invoice)]
    # the second small instance runs to the end of March: 516 hours; the first 10
    assert lines == [("large", 10, 50, 400, True), ("small", 526, 10, 5_260, False)]
    assert invoice.total == 5_660 == invoice.credits_applied
    assert invoices.lines_of(invoice)[0].description == "Instance hours, plan Large (large)"


def test_vat_is_the_part_of_the_total_it_contains_rounded_half_up(make_app):
    app = make_app(BILLING_VAT_RATE_BP=2000, BILLING_OPERATOR_NAME="Club VPS e.V.",
                   BILLING_OPERATOR_ADDRESS="1 Rack Road\n12345 Serverville")
    clock.freeze(MARCH)
    user = make_user(app)
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        make_instance(default_project_of(user.id), make_plan(price=100, cap=10**6), node, image)
        metering.tick()
        with database.atomic():
            BillingAccount.update(invoice_name="Ada Lovelace Ltd", vat_id="GB123",
                                  invoice_address="2 Engine St").execute()
        clock.freeze(APRIL_1)
        invoices.generate_due()
        invoice = Invoice.get()
    assert (invoice.total, invoice.subtotal, invoice.vat_amount, invoice.vat_rate_bp) == (
        51_600, 43_000, 8_600, 2000)
    assert (invoice.seller_name, invoice.seller_address) == ("Club VPS e.V.",
                                                             "1 Rack Road\n12345 Serverville")
    assert (invoice.buyer_name, invoice.buyer_vat_id, invoice.buyer_address) == (
        "Ada Lovelace Ltd", "GB123", "2 Engine St")


@pytest.mark.parametrize("total, rate, net", [(3, 2000, 3), (1, 2000, 1), (6, 2000, 5),
                                              (119, 1900, 100), (0, 2000, 0), (5, 0, 5),
                                              (21, 10000, 11)])
def test_split_vat_rounds_the_net_half_up(total, rate, net):
    assert invoices.split_vat(total, rate) == (net, total - net)


def test_the_seller_is_the_site_name_without_an_operator_name(world):
    _instance(world, "ada", make_plan())
    metering.tick()
    clock.freeze(APRIL_1)
    invoices.generate_due()
    assert Invoice.get().seller_name == "Appliance"
    assert Invoice.get().buyer_name == "Ada"


def test_issued_invoices_and_lines_cannot_be_changed_or_deleted(world):
    _instance(world, "ada", make_plan())
    metering.tick()
    clock.freeze(APRIL_1)
    invoices.generate_due()
    invoice = Invoice.get()
    for statement in (Invoice.update(total=1), Invoice.delete(), InvoiceLine.update(amount=1),
                      InvoiceLine.delete()):
        with pytest.raises(IntegrityError, match="immutable"):
            with database.atomic():
                statement.execute()
    assert Invoice.get_by_id(invoice.id).total == invoice.total


def test_a_failure_part_way_rolls_back_the_number_with_the_invoice(world, monkeypatch):
    plan = make_plan()
    for name in ("ada", "bob", "cy"):
        _instance(world, name, plan)
    metering.tick()
    clock.freeze(APRIL_1)
    real = invoices._announce

    def flaky(invoice):
        if invoice.user_id == world["bob"].id:
            raise RuntimeError("crash while issuing")
        real(invoice)

    monkeypatch.setattr(invoices, "_announce", flaky)
    result = invoices.generate_due()
    assert (result.issued, result.failed) == (2, 1)  # bob's failed; the others go on
    assert {i.user_id for i in Invoice.select()} == {world["ada"].id, world["cy"].id}
    assert _numbers() == ["2025-000001", "2025-000002"]
    assert InvoiceCounter.get_by_id(2025).last_number == 2
    assert not InvoiceRun.select().exists()  # March is not done
    monkeypatch.setattr(invoices, "_announce", real)
    assert invoices.generate_due().issued == 1
    assert _numbers() == ["2025-000001", "2025-000002", "2025-000003"]
    assert Invoice.get(Invoice.number == "2025-000003").user_id == world["bob"].id
    assert InvoiceRun.get().invoices == 3


@pytest.fixture
def crowd(app):
    return [make_user(app, f"u{n}@example.test") for n in range(30)]


def test_schedulers_running_at_once_issue_each_invoice_once(app, crowd, world):
    plan = make_plan(price=3)
    for user in crowd:
        make_instance(default_project_of(user.id), plan, world["node"], world["image"])
    metering.tick()
    clock.freeze(APRIL_1)
    errors, results = [], []

    def run():
        try:
            with app.app_context(), database.connection_context():
                results.append(invoices.generate_due().issued)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 30
    assert sorted(i.sequence for i in Invoice.select()) == list(range(1, 31))
    assert len({i.user_id for i in Invoice.select()}) == 30
    assert InvoiceRun.get().invoices == 30


def test_issuing_records_an_invoice_issued_event(world):
    _instance(world, "ada", make_plan())
    metering.tick()
    clock.freeze(APRIL_1)
    invoices.generate_due()
    event = Event.get(Event.type == "invoice.issued")
    assert event.user_id == world["ada"].id
    assert '"number":"2025-000001"' in event.data


# Over the API ---------------------------------------------------------------------------


# The requests run outside the set-up's app context: one shared context would share `g`
# (and so the signed-in caller) between requests.


@pytest.fixture
def issued(app, people):
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        world = {"node": node, "image": image, **people}
        plan = make_plan(price=100)
        _instance(world, "ada", plan)
        _instance(world, "bob", plan)
        metering.tick()
        clock.freeze(APRIL_1)
        invoices.generate_due()
        clock.freeze(dt.datetime(2025, 5, 1, 1, tzinfo=dt.UTC))
        invoices.generate_due()
        return {name: Invoice.select().where(Invoice.user == world[name].id)
                .order_by(Invoice.sequence).first() for name in ("ada", "bob")}


def _auth(client, name):
    return bearer(login(client, f"{name}@example.test"))


def test_the_list_is_the_callers_newest_first_and_paginated(client, issued):
    auth = _auth(client, "ada")
    first = api(client, "GET", "/billing/invoices?limit=1", auth).get_json()
    assert [i["number"] for i in first["data"]] == ["2025-000003"]
    assert first["page"]["has_more"] is True
    rest = api(client, "GET", f"/billing/invoices?limit=1&cursor={first['page']['next_cursor']}",
               auth).get_json()
    assert [i["number"] for i in rest["data"]] == ["2025-000001"]
    assert rest["page"]["has_more"] is False
    assert first["data"][0]["lines"] is None


def test_one_invoice_has_its_lines_and_download_links(client, issued):
    invoice = issued["ada"]
    body = api(client, "GET", f"/billing/invoices/{invoice.id}", _auth(client, "ada")).get_json()
    assert body["number"] == "2025-000001"
    assert body["currency"] == "EUR"
    assert body["period_start"] == "2025-03-01T00:00:00Z"
    assert body["lines"] == [{"resource": "instance", "sku": "std",
                              "description": "Instance hours, plan Std (std)", "hours": 516,
                              "unit_price": 100, "amount": 50_000, "cap_applied": True}]
    assert (body["total"], body["credits_applied"], body["amount_due"]) == (50_000, 50_000, 0)
    assert body["seller"]["name"] == "Appliance"
    assert body["buyer"]["email"] == "ada@example.test"
    assert body["pdf_url"] == f"/api/v1/billing/invoices/{invoice.id}.pdf"


def test_the_pdf_opens_and_shows_the_number_and_lines(client, issued):
    invoice = issued["ada"]
    response = api(client, "GET", f"/billing/invoices/{invoice.id}.pdf", _auth(client, "ada"))
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF-")
    text = " ".join(" ".join(page.extract_text().split())  # lines may wrap in the table
                    for page in PdfReader(io.BytesIO(response.data)).pages)
    assert "Invoice 2025-000001" in text
    assert "Period: 2025-03-01 to 2025-03-31" in text
    assert "Instance hours, plan Std (std)" in text
    assert "516" in text and "1.00 EUR" in text and "500.00 EUR" in text
    assert "monthly cap applied" in text
    assert "Amount due" in text
    # The same document as a PDF reader outside Python sees it.
    shown = " ".join(pdftotext(response.data).split())
    assert "Invoice 2025-000001" in shown and "Instance hours, plan Std (std)" in shown
    assert "500.00 EUR" in shown


def pdftotext(document: bytes) -> str:
    """The text poppler's pdftotext reads; skipped here without it, failed under CI=true
    (scripts/test-deps installs it)."""
    tool = shutil.which("pdftotext")
    if tool is None:
        reason = "pdftotext is missing: run scripts/test-deps (Debian's poppler-utils)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run([tool, "-layout", "-", "-"], input=document, capture_output=True,
                            timeout=60, check=True)
    return result.stdout.decode()


def test_user_strings_are_only_text_in_the_pdf(app, client, people):
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        with database.atomic():
            billing_state.ensure_accounts([people["ada"].id])
            BillingAccount.update(invoice_name="Zoë <b>Ŝtraße</b> 東京 (%PDF)",
                                  invoice_address="Line 1\n) Tj ET").execute()
        _instance({"node": node, "image": image, **people}, "ada", make_plan())
        metering.tick()
        clock.freeze(APRIL_1)
        invoices.generate_due()
        invoice = Invoice.get()
    response = api(client, "GET", f"/billing/invoices/{invoice.id}.pdf", _auth(client, "ada"))
    text = PdfReader(io.BytesIO(response.data)).pages[0].extract_text()
    assert "Zoë <b>Ŝtraße</b>" in text
    assert ") Tj ET" in text


def test_the_csv_has_a_row_per_line_then_the_totals(client, issued):
    invoice = issued["ada"]
    response = api(client, "GET", f"/billing/invoices/{invoice.id}.csv", _auth(client, "ada"))
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert "invoice-2025-000001.csv" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(r["row"], r["sku"], r["hours"], r["unit_price"], r["amount"], r["cap_applied"])
            for r in rows] == [
        ("1", "std", "516", "100", "50000", "true"), ("subtotal", "", "", "", "50000", ""),
        ("vat 0%", "", "", "", "0", ""), ("total", "", "", "", "50000", ""),
        ("credits_applied", "", "", "", "50000", ""), ("amount_due", "", "", "", "0", "")]
    assert {r["number"] for r in rows} == {"2025-000001"}


@pytest.mark.parametrize("suffix", ["", ".pdf", ".csv"])
def test_another_users_invoice_is_not_found(client, issued, suffix):
    response = api(client, "GET", f"/billing/invoices/{issued['ada'].id}{suffix}",
                   _auth(client, "bob"))
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "invoice_not_found"
    missing = api(client, "GET", f"/billing/invoices/inv_nope{suffix}", _auth(client, "bob"))
    assert missing.get_json()["error"]["code"] == "invoice_not_found"


def test_keys_need_billing_read(client, issued):
    auth = _auth(client, "ada")
    without, _ = create_key(client, auth, ["instances:read"])
    denied = api(client, "GET", "/billing/invoices", key_auth(without))
    assert (denied.status_code, denied.get_json()["error"]["details"]["scope"]) == (
        403, "billing:read")
    with_scope, _ = create_key(client, auth, ["billing:read"], name="books")
    listed = api(client, "GET", "/billing/invoices", key_auth(with_scope))
    assert len(listed.get_json()["data"]) == 2
    pdf = api(client, "GET", f"/billing/invoices/{issued['ada'].id}.pdf", key_auth(with_scope))
    assert pdf.status_code == 200


@pytest.mark.parametrize("query, field", [("limit=0", "limit"), ("limit=101", "limit"),
                                          ("limit=ten", "limit"), ("cursor=%25%25", "cursor")])
def test_bad_list_parameters_are_refused_naming_the_field(client, issued, query, field):
    response = api(client, "GET", f"/billing/invoices?{query}", _auth(client, "ada"))
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_admins_list_every_invoice_and_filter_by_account(app, client, issued, people):
    make_user(app, "root@example.test", role="admin")
    admin = _auth(client, "root")
    everything = api(client, "GET", "/admin/invoices", admin).get_json()["data"]
    assert len(everything) == 4
    bobs = api(client, "GET", f"/admin/invoices?user_id={people['bob'].id}", admin).get_json()
    assert {i["user_id"] for i in bobs["data"]} == {people["bob"].id}
    refused = api(client, "GET", "/admin/invoices", _auth(client, "ada"))
    assert refused.status_code == 403
    one = api(client, "GET", f"/admin/invoices/{issued['bob'].id}", admin).get_json()
    assert (one["number"], len(one["lines"])) == (issued["bob"].number, 1)
    pdf = api(client, "GET", f"/admin/invoices/{issued['bob'].id}.pdf", admin)
    assert pdf.data.startswith(b"%PDF-")
    assert api(client, "GET", "/admin/invoices/inv_nope", admin).status_code == 404
    assert api(client, "GET", f"/admin/invoices/{issued['bob'].id}.pdf",
               _auth(client, "ada")).status_code == 403


# On the dashboard -----------------------------------------------------------------------


def test_the_dashboard_lists_invoices_and_shows_one_with_downloads(app, issued):
    ada = Browser(app, "ada@example.test")
    listed = ada.page("/billing/invoices")
    invoice = issued["ada"]
    assert "2025-000001" in listed and "2025-000003" in listed
    assert f'href="/billing/invoices/{invoice.id}.pdf"' in listed
    assert 'href="/billing" aria-current="page"' in listed  # the nav's Billing link
    shown = ada.page(f"/billing/invoices/{invoice.id}")
    assert "Invoice 2025-000001" in shown
    assert "Instance hours, plan Std (std)" in shown and "500.00 EUR" in shown
    assert "monthly cap" in shown
    pdf = ada.get(f"/billing/invoices/{invoice.id}.pdf")
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF-")
    csv_file = ada.get(f"/billing/invoices/{invoice.id}.csv")
    assert csv_file.get_data(as_text=True).startswith("number,period_start")
    assert "Buy credit" not in listed  # no Stripe configured


def test_the_dashboard_gives_404_for_another_users_invoice(app, issued):
    bob = Browser(app, "bob@example.test")
    for suffix in ("", ".pdf", ".csv"):
        assert bob.get(f"/billing/invoices/{issued['ada'].id}{suffix}").status_code == 404


def test_names_typed_by_users_are_escaped_on_the_invoice_page(app, client, people):
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        with database.atomic():
            billing_state.ensure_accounts([people["ada"].id])
            BillingAccount.update(invoice_name=EVIL).execute()
        _instance({"node": node, "image": image, **people}, "ada", make_plan())
        metering.tick()
        clock.freeze(APRIL_1)
        invoices.generate_due()
        invoice = Invoice.get()
    page = Browser(app, "ada@example.test").page(f"/billing/invoices/{invoice.id}")
    assert EVIL not in page and EVIL_ESCAPED in page
