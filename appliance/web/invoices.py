"""Dashboard pages for invoices (list, one invoice, PDF and CSV downloads) and the Stripe
top-up button.

The same service functions as the JSON API decide everything (services/billing/invoices.py,
services/billing/stripe_topup.py); someone else's invoice is the service's 404, rendered by the
app's error handler. A top-up answers with a redirect to Stripe Checkout, which sends
the buyer back to the invoices page.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request

from appliance.services import money
from appliance.services.billing import billing_state, invoices, stripe_topup
from appliance.web import forms
from appliance.web.session import current_principal, login_required

bp = Blueprint("invoices", __name__)

TOPUP_NOTICES = {"success": "Thank you: your credit is added as soon as Stripe confirms the "
                            "payment.",
                 "cancelled": "The payment was cancelled; nothing was charged."}


def _context(**context) -> dict:
    currency = billing_state.currency()
    return {"money": money.format, "topups": stripe_topup.configured(),
            "site_currency": currency, "step": money.step(currency),
            "min_topup_major": money.major(stripe_topup.MIN_AMOUNT, currency),
            "max_topup_major": money.major(stripe_topup.MAX_AMOUNT, currency),
            **context}


def _list_page(status: int = 200, fragment: str | None = None, **context):
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
@forms.rerender_on_error(_list_page)
def top_up():
    amount = forms.money("amount", billing_state.currency(), required=False)
    checkout = stripe_topup.create_checkout(current_principal(), amount)
    return redirect(checkout.url, code=303)
