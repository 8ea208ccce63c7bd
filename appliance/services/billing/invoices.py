"""Monthly invoices: one statement per account and calendar month, numbered without gaps.

`generate_due(now)` (an hourly scheduler task) issues, for every month that has ended
and has not been invoiced yet, an invoice to each account with usage or any ledger
activity in that month. It first runs the metering tick, so the month's last hours are
recorded before they are summed. Each invoice:

- has one line per resource, SKU and unit price (normally one per resource and SKU; a
  plan whose hourly price changed during the month gets a line per price): hours, the
  unit price (the plan's hourly price), the amount after the monthly cap, and
  `cap_applied` when the cap made the amount smaller than hours x unit price;
- is a statement of prepaid usage. Usage was debited from the credit balance hour by
  hour, so the whole month's usage was paid with credit: `credits_applied` = `total` and
  `amount_due` = 0 (a balance that went below zero is owed on the ledger, not here).
  Prices and debits include VAT: with a VAT rate the statement shows the VAT contained
  in the total, `subtotal` = total x 10000 / (10000 + vat_rate_bp) rounded half up and
  `vat_amount` = total - subtotal, so the invoice, the ledger and the balance agree;
- is numbered `YYYY-NNNNNN`, the year it was issued and the next number of that year,
  from a counter row raised in the same transaction as the invoice insert: a crash rolls
  back both, so numbers never skip;
- carries the seller (the operator's billing name and address; SITE_NAME without one)
  and the buyer (the account's invoice name, address and VAT id; its email) as they
  were when it was issued: it is immutable, triggers refuse UPDATE and DELETE.

Idempotent: every account is invoiced in its own durable write transaction (`BEGIN
IMMEDIATE`), which looks for the account's invoice of the month first, and
UNIQUE(user, period_start) refuses a second one anyway. A re-run, a restart after a
crash, or a second scheduler issues only what is missing. When every account of a month
is done, an `InvoiceRun` row records it, so the hourly check is one query until the
next month ends. An account whose invoice fails is logged and skipped; its month stays
open (later months wait, so numbers follow the months) and the next run tries again.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from peewee import IntegrityError, fn

from appliance.errors import NotFound
from appliance.models import (
    BillingAccount,
    Invoice,
    InvoiceCounter,
    InvoiceLine,
    InvoiceRun,
    LedgerEntry,
    Plan,
    UsageRecord,
    User,
)
from appliance.services import branding, clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.billing import billing_state, ledger, metering
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.principal import Principal

log = logging.getLogger("appliance.invoices")

def month_start(moment: dt.datetime) -> dt.datetime:
    moment = moment.astimezone(dt.UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(start: dt.datetime) -> dt.datetime:
    return (start.replace(year=start.year + 1, month=1) if start.month == 12
            else start.replace(month=start.month + 1))


def previous_month(start: dt.datetime) -> dt.datetime:
    return (start.replace(year=start.year - 1, month=12) if start.month == 1
            else start.replace(month=start.month - 1))


def split_vat(total: int, vat_rate_bp: int) -> tuple[int, int]:
    """(net, VAT) of a VAT-inclusive `total`; the net is rounded half up."""
    net = (Decimal(total) * 10000 / (10000 + vat_rate_bp)).quantize(Decimal(1), ROUND_HALF_UP)
    return int(net), total - int(net)


@dataclass(frozen=True)
class GenerateResult:
    periods: tuple[str, ...]  # YYYY-MM of the months looked at
    issued: int
    failed: int = 0  # accounts whose invoice failed (logged; tried again next run)


def generate_due(now: dt.datetime | None = None) -> GenerateResult:
    """Issue every invoice due at `now` (default: the clock): see the module docstring."""
    now = now or clock.now()
    periods = _periods_due(previous_month(month_start(now)))
    if not periods:
        return GenerateResult((), 0)
    metering.tick(now)  # the month's last hours are in before they are summed
    issued = failed = 0
    names = tuple(p.strftime("%Y-%m") for p in periods)
    for period, name in zip(periods, names, strict=True):
        count = 0
        for user_id in accounts_to_invoice(period):
            try:
                if issue(user_id, period, now) is not None:
                    count += 1
            except Exception:  # one account's failure must not hold up the others'
                log.exception("invoices: the invoice of %s for %s failed", user_id, name)
                failed += 1
        issued += count
        log.info("invoices: %s issued for %s", count, name)
        if failed:
            # The month is not done: the next run tries again, and later months wait
            # so that numbers keep following the months' order.
            return GenerateResult(names, issued, failed)
        with ledger.durable():
            total = Invoice.select().where(Invoice.period_start == period).count()
            InvoiceRun.insert(period_start=period, invoices=total,
                              finished_at=now).on_conflict_ignore().execute()
    return GenerateResult(names, issued)


def _periods_due(last: dt.datetime) -> list[dt.datetime]:
    """The months up to `last` not invoiced yet, oldest first."""
    done = InvoiceRun.select(fn.MAX(InvoiceRun.period_start)).scalar()
    if done is not None:
        first = next_month(_aware(done))
    else:
        # Never run: from the month the first account was made (nothing is older, and
        # unlike the first usage hour it is one index seek away).
        oldest = User.select(fn.MIN(User.created_at)).scalar()
        if oldest is None:
            return []
        first = month_start(_aware(oldest))
    periods = []
    while first <= last:
        periods.append(first)
        first = next_month(first)
    return periods


def _aware(value: str | dt.datetime) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def accounts_to_invoice(period: dt.datetime) -> list[str]:
    """Accounts with usage or ledger activity in the month, oldest account first."""
    end = next_month(period)
    used = (UsageRecord.select(UsageRecord.id)
            .where(UsageRecord.user == User.id, UsageRecord.hour >= period,
                   UsageRecord.hour < end))
    with_usage = {row[0] for row in User.select(User.id).where(fn.EXISTS(used)).tuples()}
    with_entries = {row[0] for row in LedgerEntry.select(LedgerEntry.user).distinct()
                    .where(LedgerEntry.created_at >= period, LedgerEntry.created_at < end)
                    .tuples()}
    wanted = with_usage | with_entries
    ordered = User.select(User.id).order_by(User.created_at, User.id).tuples()
    return [user_id for (user_id,) in ordered if user_id in wanted]


def issue(user_id: str, period: dt.datetime, now: dt.datetime | None = None) -> Invoice | None:
    """Issue the account's invoice for the month starting at `period`; None when it exists.

    One durable transaction: the number, the invoice, its lines and its event commit
    together or not at all.
    """
    now = now or clock.now()
    end = next_month(period)
    try:
        with ledger.durable():
            if Invoice.select().where(Invoice.user == user_id,
                                      Invoice.period_start == period).exists():
                return None
            operator = billing_state.operator_settings()
            lines = _lines(user_id, period, end)
            total = sum(line["amount"] for line in lines)
            subtotal, vat = split_vat(total, operator.vat_rate_bp)
            user = User.get_by_id(user_id)
            account = BillingAccount.get_or_none(BillingAccount.user == user_id)
            sequence = _next_number(now.year)
            invoice = Invoice.create(
                id=new_id("inv"), user=user_id, number=f"{now.year}-{sequence:06d}",
                year=now.year, sequence=sequence, period_start=period, period_end=end,
                status="issued", currency=operator.currency, subtotal=subtotal,
                vat_rate_bp=operator.vat_rate_bp, vat_amount=vat, total=total,
                credits_applied=total, amount_due=0,
                seller_name=operator.operator_name[:200],
                seller_address=operator.operator_address,
                buyer_name=((account.invoice_name if account else "")
                            or user.display_name or user.email)[:200],
                buyer_email=user.email,
                buyer_address=account.invoice_address if account else "",
                buyer_vat_id=account.vat_id if account else "",
                issued_at=now, created_at=now)
            if lines:
                InvoiceLine.insert_many([{**line, "invoice": invoice.id}
                                         for line in lines]).execute()
            _announce(invoice)
    except IntegrityError:
        # Another process issued it between our check and insert (not on SQLite, whose
        # write lock is taken up front); the rollback took our number back too.
        if Invoice.select().where(Invoice.user == user_id,
                                  Invoice.period_start == period).exists():
            return None
        raise
    return invoice


def _next_number(year: int) -> int:
    """The year's next invoice number (inside the invoice's transaction)."""
    raised = (InvoiceCounter.update(last_number=InvoiceCounter.last_number + 1)
              .where(InvoiceCounter.year == year).execute())
    if not raised:
        InvoiceCounter.create(year=year, last_number=1)
        return 1
    return InvoiceCounter.get_by_id(year).last_number


def _lines(user_id: str, start: dt.datetime, end: dt.datetime) -> list[dict]:
    """The month's usage of the account, summed per resource, SKU and unit price."""
    gross = fn.SUM(UsageRecord.quantity * UsageRecord.unit_price)
    rows = (UsageRecord.select(UsageRecord.resource, UsageRecord.sku, UsageRecord.unit_price,
                               fn.SUM(UsageRecord.quantity), fn.SUM(UsageRecord.amount), gross)
            .where(UsageRecord.user == user_id, UsageRecord.hour >= start,
                   UsageRecord.hour < end)
            .group_by(UsageRecord.resource, UsageRecord.sku, UsageRecord.unit_price)
            .order_by(UsageRecord.resource, UsageRecord.sku, UsageRecord.unit_price).tuples())
    rows = list(rows)
    names = dict(Plan.select(Plan.slug, Plan.name)
                 .where(Plan.slug.in_({row[1] for row in rows})).tuples()) if rows else {}
    return [{"position": position, "resource": resource, "sku": sku,
             "description": _describe(resource, sku, names.get(sku))[:300],
             "hours": hours, "unit_price": unit_price, "amount": amount,
             # Storage is priced per GB-month pro rata (metering.py): no cap to apply.
             "cap_applied": resource == "instance" and amount < full}
            for position, (resource, sku, unit_price, hours, amount, full)
            in enumerate(rows, start=1)]


def _describe(resource: str, sku: str, plan_name: str | None) -> str:
    if resource == "instance":
        return f"Instance hours, plan {plan_name or sku} ({sku})"
    if resource == "backup":
        return "Backup storage, GB-hours (unit price per GB-month)"
    if resource == "backup_tier":
        return f"Scheduled backups, {sku.removeprefix('backup-tier-')} tier, instance hours"
    return f"{resource.replace('_', ' ').capitalize()} {sku}"


def _announce(invoice: Invoice) -> None:
    """Record `invoice.issued` (webhooks, notifications) in the invoice's transaction."""
    outbox.emit("invoice.issued", user_id=invoice.user_id, data={"invoice": {
        "id": invoice.id, "number": invoice.number, "total": invoice.total,
        "currency": invoice.currency, "period_start": clock.isoformat(invoice.period_start),
        "period_end": clock.isoformat(invoice.period_end)}})


# Reading --------------------------------------------------------------------------------


def list_invoices(principal: Principal, limit: int = 50,
                  cursor: str | None = None) -> pagination.Page[Invoice]:
    """The caller's invoices, newest first (API keys need `billing:read`)."""
    principal.require_scope("billing:read")
    query = Invoice.select().where(Invoice.user == principal.user.id)
    return pagination.page(query, Invoice, limit, cursor)


def get_invoice(principal: Principal, invoice_id: str) -> Invoice:
    """One of the caller's invoices; 404 `invoice_not_found` for anyone else's."""
    principal.require_scope("billing:read")
    invoice = Invoice.get_or_none(Invoice.id == invoice_id, Invoice.user == principal.user.id)
    if invoice is None:
        raise NotFound("No such invoice.", code="invoice_not_found")
    return invoice


def admin_list_invoices(principal: Principal, user_id: str | None = None, limit: int = 50,
                        cursor: str | None = None) -> pagination.Page[Invoice]:
    """Every account's invoices, newest first, optionally one account's (admins only)."""
    require_admin(principal)
    query = Invoice.select()
    if user_id:
        query = query.where(Invoice.user == user_id)
    return pagination.page(query, Invoice, limit, cursor)


def admin_get_invoice(principal: Principal, invoice_id: str) -> Invoice:
    require_admin(principal)
    invoice = Invoice.get_or_none(Invoice.id == invoice_id)
    if invoice is None:
        raise NotFound("No such invoice.", code="invoice_not_found")
    return invoice


def lines_of(invoice: Invoice) -> list[InvoiceLine]:
    return list(InvoiceLine.select().where(InvoiceLine.invoice == invoice.id)
                .order_by(InvoiceLine.position))


CSV_COLUMNS = ("number", "period_start", "period_end", "row", "resource", "sku",
               "description", "hours", "unit_price", "amount", "cap_applied", "currency")


def invoice_csv(invoice: Invoice) -> Iterator[str]:
    """The invoice as CSV: a row per line, then subtotal, VAT, total, credits applied and
    amount due rows (their amount in the `amount` column)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    head = (invoice.number, clock.isoformat(invoice.period_start),
            clock.isoformat(invoice.period_end))
    for line in lines_of(invoice):
        writer.writerow((*head, line.position, line.resource, line.sku,
                         _csv_safe(line.description), line.hours, line.unit_price,
                         line.amount, "true" if line.cap_applied else "false",
                         invoice.currency))
    for row, amount in (("subtotal", invoice.subtotal),
                        (f"vat {invoice.vat_rate_bp / 100:g}%", invoice.vat_amount),
                        ("total", invoice.total), ("credits_applied", invoice.credits_applied),
                        ("amount_due", invoice.amount_due)):
        writer.writerow((*head, row, "", "", "", "", "", amount, "", invoice.currency))
    yield out.getvalue()


def _csv_safe(text: str) -> str:
    """Keep a spreadsheet from running a description as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def pdf(invoice: Invoice) -> bytes:
    """The invoice as a PDF (services/billing/invoice_pdf.py). fpdf2, with fontTools, costs a
    quarter of a second and megabytes at start-up, so it is loaded by the first PDF."""
    from appliance.services.billing import invoice_pdf  # lazy: fpdf2 loads only for a PDF

    return invoice_pdf.render(invoice, lines_of(invoice), branding.current())
