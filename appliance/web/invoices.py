"""Dashboard pages for invoices (list, one invoice, PDF and CSV downloads) and the Stripe
top-up button.

The same service functions as the JSON API decide everything (services/billing/invoices.py,
services/billing/stripe_topup.py); someone else's invoice is the service's 404, rendered by the
app's error handler. A top-up answers with a redirect to Stripe Checkout, which sends
the buyer back to the invoices page.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import Blueprint, Response, redirect, render_template, request

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import money
from appliance.services.billing import billing_state, invoices, stripe_topup
from appliance.web.session import current_principal, login_required

bp = Blueprint("invoices", __name__)

TOPUP_NOTICES = {"success": "Thank you: your credit is added as soon as Stripe confirms the "
                            "payment.",
                 "cancelled": "The payment was cancelled; nothing was charged."}


def _context(**context) -> dict:
    currency = billing_state.currency()
    exponent = money.exponent(currency)
    return {"money": money.format, "topups": stripe_topup.configured(),
            "site_currency": currency, "step": f"{Decimal(1).scaleb(-exponent)}",
            "min_topup_major": f"{Decimal(stripe_topup.MIN_AMOUNT).scaleb(-exponent)}",
            "max_topup_major": f"{Decimal(stripe_topup.MAX_AMOUNT).scaleb(-exponent)}",
            **context}


def _amount_in_minor_units() -> int | None:
    """The form's amount, typed in the currency's major unit ("25.50"), in minor units."""
    raw = request.form.get("amount", "").strip()
    if not raw:
        return None
    exponent = money.exponent(billing_state.currency())
    try:
        minor = Decimal(raw).scaleb(exponent)
    except InvalidOperation:
        raise InvalidRequest("Enter an amount such as 25.00.", field="amount") from None
    if not minor.is_finite() or minor != minor.to_integral_value():
        raise InvalidRequest(f"Enter an amount with at most {exponent} decimals.",
                             field="amount")
    return int(minor)


def _list_page(status: int = 200, **context):
    rows, next_cursor = invoices.list_invoices(current_principal(),
                                               cursor=request.args.get("cursor") or None)
    notice = TOPUP_NOTICES.get(request.args.get("topup", ""))
    return render_template("billing/invoices.html", invoices=rows, next_cursor=next_cursor,
                           **_context(notice=notice, **context)), status


@bp.get("/billing/invoices")
@login_required
def index():
    return _list_page()


@bp.get("/billing/invoices/<invoice_id>")
@login_required
def show(invoice_id: str):
    invoice = invoices.get_invoice(current_principal(), invoice_id)
    return render_template("billing/invoice.html", invoice=invoice,
                           lines=invoices.lines_of(invoice), **_context())


def _download(body, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/billing/invoices/<invoice_id>.pdf")
@login_required
def pdf(invoice_id: str):
    invoice = invoices.get_invoice(current_principal(), invoice_id)
    return _download(invoices.pdf(invoice),
                     "application/pdf", f"invoice-{invoice.number}.pdf")


@bp.get("/billing/invoices/<invoice_id>.csv")
@login_required
def csv(invoice_id: str):
    invoice = invoices.get_invoice(current_principal(), invoice_id)
    return _download(invoices.invoice_csv(invoice), "text/csv",
                     f"invoice-{invoice.number}.csv")


@bp.post("/billing/top-up")
@login_required
def top_up():
    try:
        amount = _amount_in_minor_units()
        checkout = stripe_topup.create_checkout(current_principal(), amount)
    except ApplianceError as exc:
        return _list_page(exc.status, error=exc, error_field=exc.details.get("field"),
                          form=request.form)
    return redirect(checkout.url, code=303)
