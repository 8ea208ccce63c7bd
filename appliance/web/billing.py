"""Dashboard pages for the caller's own billing and usage: /billing and /usage.

Thin views over the same services as the JSON API (services/billing/prepaid.py, promo.py,
usage.py, invoices.py, stripe_topup.py): they parse the form - amounts typed in the
currency's major unit ("12.50") become integer minor units here - call one service
function, and render. Every rule (thresholds, caps, promo refusals) is the service's; its
error is shown next to the field it names, in the form that was posted.

The balance chart is the daily spend of the last 30 days (`usage.chart`); the usage page
draws 7, 30 or 90 days. Charts are server-side SVG (web/charts.py), so the read paths work
without JavaScript; htmx only swaps the chart, the ledger page and the alert list.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import Blueprint, Response, redirect, request, stream_with_context, url_for

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import clock, money
from appliance.services.billing import billing_state, invoices, prepaid, promo, stripe_topup, usage
from appliance.web import charts
from appliance.web.projects import render_fragment_or_page
from appliance.web.session import current_principal, login_required

bp = Blueprint("billing", __name__)

CHART_DAYS = (7, 30, 90)
LEDGER_PAGE = 20
STATUS_TEXT = {"suspended": "the account is suspended",
               "below_minimum_balance": "the balance is below the minimum to provision",
               "spend_cap_reached": "this month's spending reached your spend cap"}


# Parsing and showing money ----------------------------------------------------------


def money_field(name: str, currency: str, *, required: bool = True,
                allow_negative: bool = False) -> int | None:
    """The form's amount in the currency's major unit ("12.50") as minor units (1250).

    None when left empty and not required; 400 naming the field for anything else that
    is not such an amount. The service checks the range.
    """
    raw = request.form.get(name, "").strip().replace(",", "")
    if not raw:
        if required:
            raise InvalidRequest("Enter an amount.", field=name)
        return None
    exponent = money.exponent(currency)
    example = "25" if exponent == 0 else "25." + "0" * exponent
    try:
        minor = Decimal(raw).scaleb(exponent)
    except InvalidOperation:
        raise InvalidRequest(f"Enter an amount such as {example}.", field=name) from None
    if not minor.is_finite() or minor != minor.to_integral_value() or abs(minor) > 10**15:
        raise InvalidRequest(f"Enter an amount such as {example} (at most {exponent} "
                             "decimals).", field=name)
    if minor < 0 and not allow_negative:
        raise InvalidRequest("Enter an amount of zero or more.", field=name)
    return int(minor)


def major(minor: int | None, currency: str) -> str:
    """Minor units as the amount a user types back into a form ("12.50"); "" for None."""
    if minor is None:
        return ""
    exponent = money.exponent(currency)
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


def run_out_text(hours: float | None) -> str | None:
    """"about 18 h" under two days, else "about 5 days"; None when nothing burns."""
    if hours is None:
        return None
    if hours < 1:
        return "less than an hour"
    if hours < 48:
        return f"about {round(hours)} h"
    return f"about {round(hours / 24)} days"


def money_helpers(currency: str) -> dict:
    return {"money": lambda minor: money.format(minor, currency),
            "major": lambda minor: major(minor, currency), "currency": currency,
            "step": f"{Decimal(1).scaleb(-money.exponent(currency))}"}


def _failed(page, exc: ApplianceError, section: str, **context):
    return page(exc.status, error=exc, error_field=exc.details.get("field"), section=section,
                **context)


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
    exponent = money.exponent(currency)
    return render_fragment_or_page(
        "billing/overview.html", fragment, status, billing=found,
        run_out=run_out_text(found.hours_left), not_ready=STATUS_TEXT,
        charts=charts.both_sizes([(p.day, p.amount) for p in points], currency),
        points=points, entries=entries, next_cursor=next_cursor,
        cursor=request.args.get("cursor") or None,
        alerts=prepaid.list_alerts(principal), account=prepaid.account_settings(principal),
        latest_invoices=latest_invoices, topups=stripe_topup.configured(),
        min_topup=f"{Decimal(stripe_topup.MIN_AMOUNT).scaleb(-exponent)}",
        max_topup=f"{Decimal(stripe_topup.MAX_AMOUNT).scaleb(-exponent)}",
        **money_helpers(currency), **context)


@bp.get("/billing")
@login_required
def index():
    fragment = "billing/_ledger.html" if request.args.get("part") == "ledger" else None
    return _billing_page(fragment=fragment, notice=request.args.get("notice"))


@bp.get("/billing/statement.csv")
@login_required
def statement():
    return _csv(prepaid.statement_csv(current_principal()), "statement.csv")


@bp.post("/billing/promo")
@login_required
def redeem_promo():
    code = request.form.get("code", "")
    try:
        entry = promo.redeem(current_principal(), code)
    except ApplianceError as exc:
        return _failed(_billing_page, exc, "promo", form={"code": code})
    added = money.format(entry.amount, billing_state.currency())
    return redirect(url_for("billing.index", notice=f"Promo code redeemed: {added} added."))


def _alerts_answer(notice: str):
    if request.headers.get("HX-Request"):
        return _billing_page(fragment="billing/_alerts.html", notice=notice)
    return redirect(url_for("billing.index", notice=notice, _anchor="alerts"))


@bp.post("/billing/alerts")
@login_required
def create_alert():
    principal = current_principal()
    try:
        threshold = money_field("threshold", billing_state.currency())
        alert = prepaid.create_alert(principal, threshold)
    except ApplianceError as exc:
        return _failed(_billing_page, exc, "alerts", fragment="billing/_alerts.html",
                       form=request.form)
    return _alerts_answer(
        f"You will be told when the balance falls below "
        f"{money.format(alert.threshold, billing_state.currency())}.")


@bp.post("/billing/alerts/<alert_id>/delete")
@login_required
def delete_alert(alert_id: str):
    try:
        prepaid.delete_alert(current_principal(), alert_id)
    except ApplianceError as exc:
        return _failed(_billing_page, exc, "alerts", fragment="billing/_alerts.html")
    return _alerts_answer("Alert deleted.")


@bp.post("/billing/settings")
@login_required
def save_settings():
    form = request.form
    try:
        spend_cap = money_field("spend_cap", billing_state.currency(), required=False)
        prepaid.update_settings(current_principal(), spend_cap=spend_cap,
                                invoice_name=form.get("invoice_name", ""),
                                invoice_address=form.get("invoice_address", ""),
                                vat_id=form.get("vat_id", ""))
    except ApplianceError as exc:
        return _failed(_billing_page, exc, "settings", form=form)
    return redirect(url_for("billing.index", notice="Billing settings saved.",
                            _anchor="settings"))


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
    return render_fragment_or_page(
        "billing/usage.html", fragment, days=days, day_choices=CHART_DAYS, points=points,
        charts=charts.both_sizes([(p.day, p.amount) for p in points], currency),
        period_total=sum(p.amount for p in points),
        summary=usage.summary(principal), lines=lines,
        month_total=sum(line.amount for line in lines),
        month=prepaid.month_start(clock.now()).strftime("%B %Y"),
        **money_helpers(currency))


@bp.get("/usage/export.csv")
@login_required
def usage_export():
    return _csv(usage.export_csv(current_principal()), "usage.csv")


def _csv(chunks, filename: str) -> Response:
    return Response(stream_with_context(chunks), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


def overview_cards(principal) -> dict:
    """The dashboard home's billing cards: balance and run-out, month to date, instances."""
    found = prepaid.overview(principal)
    return {"billing_cards": {"billing": found, "run_out": run_out_text(found.hours_left),
                              "instances": usage.summary(principal)["active_instances"],
                              "money": lambda minor: money.format(minor, found.currency)}}
