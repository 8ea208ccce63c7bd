"""Invoices and Stripe top-ups over JSON: the caller's invoices (JSON, PDF, CSV), all
invoices for administrators, a Checkout Session to buy credit, and Stripe's webhook."""

from __future__ import annotations

import datetime as dt

from flask import Response, request
from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Invoice, InvoiceLine
from appliance.services.billing import invoices, stripe_topup
from appliance.services.principal import Principal

bp = ApiBlueprint("invoices_api", __name__)
TAGS = ("invoices",)


class InvoiceLineOut(Schema):
    resource: str
    sku: str
    description: str
    hours: int
    unit_price: int
    amount: int = Field(description="After the monthly cap.")
    cap_applied: bool = Field(description="The plan's monthly cap made the amount smaller "
                                          "than hours x unit price.")

    @classmethod
    def of(cls, line: InvoiceLine) -> InvoiceLineOut:
        return cls(resource=line.resource, sku=line.sku, description=line.description,
                   hours=line.hours, unit_price=line.unit_price, amount=line.amount,
                   cap_applied=line.cap_applied)


class Party(Schema):
    name: str
    address: str
    vat_id: str | None = None
    email: str | None = None


class InvoiceOut(Schema):
    id: str
    number: str = Field(description="YYYY-NNNNNN: sequential without gaps per year.")
    user_id: str
    status: str
    period_start: dt.datetime
    period_end: dt.datetime = Field(description="Exclusive: the first instant of the next "
                                                "month.")
    currency: str
    subtotal: int = Field(description="Net of VAT, minor units.")
    vat_rate_bp: int
    vat_amount: int = Field(description="The VAT included in the total.")
    total: int
    credits_applied: int = Field(description="Paid from the prepaid credit balance.")
    amount_due: int
    seller: Party
    buyer: Party
    issued_at: dt.datetime
    lines: list[InvoiceLineOut] | None = Field(
        None, description="Only on the single invoice, not in lists.")
    pdf_url: str
    csv_url: str

    @classmethod
    def of(cls, invoice: Invoice, lines: list[InvoiceLine] | None = None) -> InvoiceOut:
        base = f"/api/v1/billing/invoices/{invoice.id}"
        return cls(
            id=invoice.id, number=invoice.number, user_id=invoice.user_id,
            status=invoice.status, period_start=invoice.period_start,
            period_end=invoice.period_end, currency=invoice.currency,
            subtotal=invoice.subtotal, vat_rate_bp=invoice.vat_rate_bp,
            vat_amount=invoice.vat_amount, total=invoice.total,
            credits_applied=invoice.credits_applied, amount_due=invoice.amount_due,
            seller=Party(name=invoice.seller_name, address=invoice.seller_address),
            buyer=Party(name=invoice.buyer_name, address=invoice.buyer_address,
                        vat_id=invoice.buyer_vat_id or None, email=invoice.buyer_email),
            issued_at=invoice.issued_at,
            lines=[InvoiceLineOut.of(line) for line in lines] if lines is not None else None,
            pdf_url=base + ".pdf", csv_url=base + ".csv")


class InvoiceList(Schema):
    data: list[InvoiceOut]
    page: PageInfo


class AdminInvoiceQuery(ListQuery):
    user_id: str | None = Field(None, max_length=40, description="Only this account's.")


@bp.operation("/billing/invoices", summary="Your invoices", tags=TAGS, query=ListQuery,
              response=InvoiceList, auth=USER_OR_KEY,
              description="Monthly statements, newest first. API keys need `billing:read`.")
def list_invoices(principal: Principal, query: ListQuery):
    rows, next_cursor = invoices.list_invoices(principal, query.limit, query.cursor)
    return page_body([InvoiceOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/billing/invoices/<invoice_id>", summary="One invoice with its lines",
              tags=TAGS, response=InvoiceOut, auth=USER_OR_KEY, errors=(404,))
def get_invoice(principal: Principal, invoice_id: str):
    invoice = invoices.get_invoice(principal, invoice_id)
    return InvoiceOut.of(invoice, invoices.lines_of(invoice))


def _download(body, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.operation("/billing/invoices/<invoice_id>.pdf", summary="An invoice as PDF", tags=TAGS,
              auth=USER_OR_KEY, errors=(404,), produces="application/pdf")
def invoice_pdf_file(principal: Principal, invoice_id: str):
    invoice = invoices.get_invoice(principal, invoice_id)
    return _download(invoices.pdf(invoice),
                     "application/pdf", f"invoice-{invoice.number}.pdf")


@bp.operation("/billing/invoices/<invoice_id>.csv", summary="An invoice as CSV", tags=TAGS,
              auth=USER_OR_KEY, errors=(404,), produces="text/csv")
def invoice_csv_file(principal: Principal, invoice_id: str):
    invoice = invoices.get_invoice(principal, invoice_id)
    return _download(invoices.invoice_csv(invoice), "text/csv",
                     f"invoice-{invoice.number}.csv")


@bp.operation("/admin/invoices", summary="Every account's invoices", tags=("admin",),
              query=AdminInvoiceQuery, response=InvoiceList, auth=USER_OR_KEY,
              description="Newest first; `user_id` narrows to one account. Administrators "
                          "only (keys need `admin`).")
def admin_list_invoices(principal: Principal, query: AdminInvoiceQuery):
    rows, next_cursor = invoices.admin_list_invoices(principal, query.user_id, query.limit,
                                                     query.cursor)
    return page_body([InvoiceOut.of(row) for row in rows], query.limit, next_cursor)


@bp.operation("/admin/invoices/<invoice_id>", summary="Any account's invoice with its lines",
              tags=("admin",), response=InvoiceOut, auth=USER_OR_KEY, errors=(404,))
def admin_get_invoice(principal: Principal, invoice_id: str):
    invoice = invoices.admin_get_invoice(principal, invoice_id)
    return InvoiceOut.of(invoice, invoices.lines_of(invoice))


@bp.operation("/admin/invoices/<invoice_id>.pdf", summary="Any account's invoice as PDF",
              tags=("admin",), auth=USER_OR_KEY, errors=(404,), produces="application/pdf")
def admin_invoice_pdf(principal: Principal, invoice_id: str):
    invoice = invoices.admin_get_invoice(principal, invoice_id)
    return _download(invoices.pdf(invoice),
                     "application/pdf", f"invoice-{invoice.number}.pdf")


# Stripe top-ups -------------------------------------------------------------------------


class TopUpIn(Schema):
    amount: int = Field(description="Credit to buy, in minor units of the operator's "
                                    f"currency ({stripe_topup.MIN_AMOUNT}-"
                                    f"{stripe_topup.MAX_AMOUNT}).")


class TopUpOut(Schema):
    checkout_url: str = Field(description="Send the buyer here (Stripe Checkout).")
    session_id: str


class StripeWebhookOut(Schema):
    received: bool
    credited: bool


@bp.operation("/billing/top-up", "POST", summary="Buy credit with Stripe Checkout",
              tags=TAGS, body=TopUpIn, response=TopUpOut, status=201, auth=USER_OR_KEY,
              errors=(502, 503), commits_apart=True,  # waits on Stripe: not in the write lock
              description="Creates a Stripe Checkout Session; the balance grows when Stripe "
                          "reports the payment. 503 `provider_not_configured` without a "
                          "Stripe key. API keys need `billing:write`.")
def top_up(principal: Principal, body: TopUpIn):
    session = stripe_topup.create_checkout(principal, body.amount)
    return TopUpOut(checkout_url=session.url, session_id=session.session_id)


@bp.operation("/billing/stripe/webhook", "POST", summary="Stripe's event webhook",
              tags=TAGS, response=StripeWebhookOut, errors=(400, 503),
              description="Called by Stripe, signed with `Stripe-Signature`; credits each "
                          "paid Checkout Session once. Other event types are ignored.")
def stripe_webhook():
    credited = stripe_topup.handle_webhook(request.headers.get("Stripe-Signature", ""),
                                           request.get_data(cache=True))
    return StripeWebhookOut(received=True, credited=credited)
