"""Dashboard pages for the caller's own billing and usage: /billing and /usage.

Thin views over the same services as the JSON API (services/billing/prepaid.py, promo.py,
usage.py, invoices.py, stripe_topup.py): they parse the form - amounts typed in the
currency's major unit ("12.50", "12,50") become integer minor units through web/forms.py
and services/money.py - call one service
function, and render. Every rule (thresholds, caps, promo refusals) is the service's; its
error is shown next to the field it names, in the form that was posted.

The balance chart is the daily spend of the last 30 days (`usage.chart`); the usage page
draws 7, 30 or 90 days. Charts are server-side SVG (web/charts.py), so the read paths work
without JavaScript; htmx only swaps the chart, the ledger page and the alert list.
"""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from appliance.errors import ApplianceError
from appliance.services import clock, money
from appliance.services.billing import billing_state, invoices, prepaid, promo, stripe_topup, usage
from appliance.web import charts, forms, overview_metrics
from appliance.web.session import current_principal, login_required

bp = Blueprint("billing", __name__)

CHART_DAYS = (7, 30, 90)
LEDGER_PAGE = 20
STATUS_TEXT = {"suspended": "the account is suspended",
               "below_minimum_balance": "the balance is below the minimum to provision",
               "spend_cap_reached": "this month's spending reached your spend cap"}


# The billing page -------------------------------------------------------------------


def _billing_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    found = prepaid.overview(principal)
    currency = found.currency
    entries, next_cursor = prepaid.list_credits(principal, LEDGER_PAGE,
                                                request.args.get("cursor") or None)
    points = usage.chart(principal, 30)
    latest_invoices, _ = invoices.list_invoices(principal, limit=3)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return forms.render_fragment_or_page(
        "billing/overview.html", fragment, status, billing=found,
        run_out=overview_metrics.run_out_text(found.hours_left, found.run_out_beyond_horizon),
        not_ready=STATUS_TEXT,
        charts=charts.both_sizes([(p.day, p.amount) for p in points], currency),
        points=points, entries=entries, next_cursor=next_cursor,
        cursor=request.args.get("cursor") or None,
        alerts=prepaid.list_alerts(principal), account=prepaid.account_settings(principal),
        latest_invoices=latest_invoices, topups=stripe_topup.configured(),
        min_topup=money.major(stripe_topup.MIN_AMOUNT, currency),
        max_topup=money.major(stripe_topup.MAX_AMOUNT, currency),
        **forms.money_context(currency), **context)


@bp.get("/billing")
@login_required
def index():
    fragment = "billing/_ledger.html" if request.args.get("part") == "ledger" else None
    return _billing_page(fragment=fragment, notice=request.args.get("notice"))


@bp.get("/billing/statement.csv")
@login_required
def statement():
    return _csv(prepaid.statement_csv(current_principal()), "statement.csv")


@bp.get("/billing/promo/check")
@login_required
def check_promo():
    """The promo form's check before redeeming (htmx fragment; the whole page without)."""
    if request.headers.get("HX-Request") != "true":
        return redirect(url_for("billing.index", _anchor="promo"))
    code = request.args.get("code", "").strip()
    found, error = None, None
    if code:
        try:
            found = promo.check(current_principal(), code)
        except ApplianceError as exc:
            error = exc
    return render_template("billing/_promo_check.html", found=found, error=error,
                           **forms.money_context(billing_state.currency()))


@bp.post("/billing/promo")
@login_required
@forms.rerender_on_error(_billing_page, "promo")
def redeem_promo():
    entry = promo.redeem(current_principal(), request.form.get("code", ""))
    added = money.format(entry.amount, billing_state.currency())
    return forms.back("billing.index", f"Promo code redeemed: {added} added.")


ALERTS = "billing/_alerts.html"


def _alerts_answer(notice: str):
    if request.headers.get("HX-Request"):
        return _billing_page(fragment=ALERTS, notice=notice)
    return forms.back("billing.index", notice, _anchor="alerts")


@bp.post("/billing/alerts")
@login_required
@forms.rerender_on_error(_billing_page, "alerts", ALERTS)
def create_alert():
    currency = billing_state.currency()
    alert = prepaid.create_alert(current_principal(), forms.required_money("threshold", currency))
    return _alerts_answer(f"You will be told when the balance falls below "
                          f"{money.format(alert.threshold, currency)}.")


@bp.post("/billing/alerts/<alert_id>/delete")
@login_required
@forms.rerender_on_error(_billing_page, "alerts", ALERTS)
def delete_alert(alert_id: str):
    prepaid.delete_alert(current_principal(), alert_id)
    return _alerts_answer("Alert deleted.")


@bp.post("/billing/settings")
@login_required
@forms.rerender_on_error(_billing_page, "settings")
def save_settings():
    form = request.form
    prepaid.update_settings(
        current_principal(), spend_cap=forms.money("spend_cap", billing_state.currency(),
                                                   required=False),
        invoice_name=form.get("invoice_name", ""), invoice_address=form.get("invoice_address", ""),
        vat_id=form.get("vat_id", ""))
    return forms.back("billing.index", "Billing settings saved.", _anchor="settings")


# The usage page ---------------------------------------------------------------------


def _days() -> int:
    try:
        days = int(request.args.get("days", 30))
    except ValueError:
        days = 30
    return days if days in CHART_DAYS else 30


@bp.get("/usage")
@login_required
def usage_page():
    principal = current_principal()
    days = _days()
    currency = billing_state.currency()
    points = usage.chart(principal, days)
    lines = usage.by_resource(principal)
    fragment = "billing/_usage_chart.html" if request.args.get("part") == "chart" else None
    return forms.render_fragment_or_page(
        "billing/usage.html", fragment, days=days, day_choices=CHART_DAYS, points=points,
        charts=charts.both_sizes([(p.day, p.amount) for p in points], currency),
        period_total=sum(p.amount for p in points),
        summary=usage.summary(principal), lines=lines, subjects=usage.by_subject(principal),
        month_total=sum(line.amount for line in lines),
        month=prepaid.month_start(clock.now()).strftime("%B %Y"),
        **forms.money_context(currency))


@bp.get("/usage/export.csv")
@login_required
def usage_export():
    return _csv(usage.export_csv(current_principal()), "usage.csv")


def _csv(chunks, filename: str) -> Response:
    return Response(stream_with_context(chunks), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})
