"""Dashboard pages for the operator's billing: account balances, grants and adjustments,
promo codes and the billing settings (under /admin/billing).

The same service functions as the admin JSON API decide (services/billing/prepaid.py, promo.py);
they check that the caller is an administrator, and `admin_required` turns everyone else
away first (403). Amounts are typed in the currency's major unit and sent to the
services in minor units (web/forms.py's `money`, read by services/money.py).

A grant is confirmed before it is posted: the first POST shows what would happen, and
only the POST of the confirmation (`confirmed=yes`) moves credit. Deleting a promo code
asks first as well (an open <details> box), which works without JavaScript.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from flask import Blueprint, render_template, request

from appliance.config import parse_currency
from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import money
from appliance.services.accounts.admin import get_user
from appliance.services.billing import billing_state, prepaid, promo
from appliance.services.billing.prepaid import GRANT_TYPES
from appliance.web import forms
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_billing", __name__, url_prefix="/admin/billing")

PAGE = 25
GRANT_LABELS = {"grant": "Grant (adds credit)",
                "adjustment": "Adjustment (adds, or takes away with a minus sign)",
                "refund": "Refund (adds credit back)"}


# Accounts and grants ----------------------------------------------------------------


@bp.get("/")
@admin_required
def accounts():
    q = request.args.get("q", "")
    status = request.args.get("status") or None
    rows, next_cursor = prepaid.account_balances(current_principal(), q, PAGE,
                                                 request.args.get("cursor") or None, status)
    context = {"rows": rows, "next_cursor": next_cursor, "q": q, "status": status or "",
               "statuses": prepaid.ACCOUNT_STATUSES,
               **forms.money_context(billing_state.currency())}
    if request.headers.get("HX-Request") and request.args.get("part") == "table":
        return render_template("admin/_billing_accounts.html", **context)
    return render_template("admin/billing_accounts.html", **context)


def _account_page(user_id: str, status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    target = get_user(principal, user_id)
    entries, next_cursor = prepaid.user_credits(principal, user_id, PAGE,
                                                request.args.get("cursor") or None)
    latest, _ = prepaid.user_credits(principal, user_id, 1)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return render_template(
        "admin/billing_account.html", target=target, entries=entries, next_cursor=next_cursor,
        balance=latest[0].balance_after if latest else 0, grant_labels=GRANT_LABELS,
        **forms.money_context(billing_state.currency()), **context), status


@bp.get("/accounts/<user_id>")
@admin_required
def account(user_id: str):
    return _account_page(user_id, notice=request.args.get("notice"))


@bp.post("/accounts/<user_id>/credits")
@admin_required
@forms.rerender_on_error(_account_page, "grant")
def grant(user_id: str):
    """Show the confirmation; post the entry once it is confirmed."""
    form = request.form
    kind = form.get("type", "grant")
    if kind not in GRANT_TYPES:
        raise InvalidRequest(f"The type is one of {', '.join(GRANT_TYPES)}.", field="type")
    currency = billing_state.currency()
    amount = forms.required_money("amount", currency, allow_negative=kind == "adjustment")
    if form.get("confirmed") != "yes":
        if not form.get("note", "").strip():
            raise InvalidRequest("Say why; the account holder sees the note.", field="note")
        return _account_page(user_id, confirm={"type": kind, "amount": amount}, form=form,
                             section="grant")
    entry = prepaid.grant(current_principal(), user_id, amount, form.get("note", ""),
                          type=kind)
    notice = (f"{kind.title()} of {money.format(entry.amount, currency)} posted; the balance "
              f"is now {money.format(entry.balance_after, currency)}.")
    return forms.back("admin_billing.account", notice, user_id=user_id)


# Promo codes ------------------------------------------------------------------------


def _promo_page(status: int = 200, fragment: str | None = None, **context):
    rows, next_cursor = promo.list_codes(current_principal(), PAGE,
                                         request.args.get("cursor") or None)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return render_template("admin/promo_codes.html", codes=rows, next_cursor=next_cursor,
                           status_of=promo.status_of,
                           **forms.money_context(billing_state.currency()), **context), status


@bp.get("/promo-codes")
@admin_required
def promo_codes():
    return _promo_page(notice=request.args.get("notice"))


@bp.post("/promo-codes")
@admin_required
@forms.rerender_on_error(_promo_page, "create")
def create_promo_code():
    form = request.form
    expires_on = forms.date("expires_at", message="Pick the last day the code works.")
    created = promo.create_code(
        current_principal(), code=form.get("code", ""),
        amount=forms.required_money("amount", billing_state.currency()),
        max_uses=forms.integer("max_uses"), once_per_user=bool(form.get("once_per_user")),
        expires_at=forms.midnight_after(expires_on), note=form.get("note", ""))
    return forms.back("admin_billing.promo_codes",
                      f"Promo code {created.code.upper()} created.")


def _promo_failed(exc: ApplianceError, promo_id: str):
    return forms.failed(_promo_page, exc, f"promo-{promo_id}", form={})


@bp.post("/promo-codes/<promo_id>/active")
@admin_required
def set_promo_active(promo_id: str):
    active = request.form.get("active") == "on"
    try:
        changed = promo.update_code(current_principal(), promo_id, active=active)
    except ApplianceError as exc:
        return _promo_failed(exc, promo_id)
    state = "active again" if active else "deactivated"
    return forms.back("admin_billing.promo_codes",
                      f"Promo code {changed.code.upper()} {state}.")


@bp.post("/promo-codes/<promo_id>/delete")
@admin_required
def delete_promo_code(promo_id: str):
    try:
        promo.delete_code(current_principal(), promo_id)
    except ApplianceError as exc:
        return _promo_failed(exc, promo_id)
    return forms.back("admin_billing.promo_codes", "Promo code deleted.")


# Billing settings -------------------------------------------------------------------


def _settings_page(status: int = 200, fragment: str | None = None, **context):
    found = billing_state.operator_settings()
    context.setdefault("form", {})
    context.setdefault("section", None)
    values = {"currency": found.currency, "vat_rate_bp": _percent(found.vat_rate_bp),
              "min_balance": money.major(found.min_balance, found.currency),
              "grace_hours": found.grace_hours,
              "low_balance_thresholds": ", ".join(
                  money.major(t, found.currency) for t in found.low_balance_thresholds),
              "operator_name": found.operator_name,
              "operator_address": found.operator_address,
              "backup_tier_basic_hourly": money.major(found.backup_tier_basic_hourly,
                                                      found.currency),
              "backup_tier_extended_hourly": money.major(found.backup_tier_extended_hourly,
                                                         found.currency),
              "backup_tier_basic_days": found.backup_tier_basic_days,
              "backup_tier_extended_days": found.backup_tier_extended_days,
              "backup_tier_extended_weeks": found.backup_tier_extended_weeks}
    return render_template("admin/billing_settings.html", values=values,
                           **forms.money_context(found.currency), **context), status


def _percent(basis_points: int) -> str:
    return f"{Decimal(basis_points) / 100:f}".rstrip("0").rstrip(".") or "0"


def _basis_points() -> int:
    raw = request.form.get("vat_rate_bp", "").strip().rstrip("%").strip() or "0"
    try:
        value = Decimal(raw) * 100
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value != value.to_integral_value():
        raise InvalidRequest("Enter the VAT rate in percent with at most two decimals, such as "
                             "20 or 7.7.", field="vat_rate_bp")
    return int(value)


def _thresholds(currency: str) -> list[int]:
    """Amounts separated by commas ("10, 5.50"), semicolons or lines. A comma followed by
    a space separates; one between digits is a decimal comma ("10, 5,50" is 10 and 5.50)."""
    raw = request.form.get("low_balance_thresholds", "").replace(";", "\n")
    parts = [part for line in raw.splitlines() for part in line.replace(", ", "\n").split("\n")]
    amounts = []
    for part in parts:
        if not part.strip():
            continue
        try:
            amount = money.parse(part.strip().rstrip(","), currency,
                                 field="low_balance_thresholds")
        except InvalidRequest:
            amount = 0
        if amount < 1:
            raise InvalidRequest(f"Enter amounts such as 10, {money.example(currency)} "
                                 "separated by commas.", field="low_balance_thresholds")
        amounts.append(amount)
    return amounts


@bp.get("/settings")
@admin_required
def settings():
    return _settings_page(notice=request.args.get("notice"))


@bp.post("/settings")
@admin_required
@forms.rerender_on_error(_settings_page, "settings")
def save_settings():
    form = request.form
    try:
        currency = parse_currency(form.get("currency", ""))
    except ValueError as exc:
        raise InvalidRequest(f"{str(exc).capitalize()}.", field="currency") from None
    values = {"currency": currency, "vat_rate_bp": _basis_points(),
              "min_balance": forms.required_money("min_balance", currency, allow_negative=True),
              "grace_hours": forms.required_integer("grace_hours"),
              "low_balance_thresholds": _thresholds(currency),
              "operator_name": form.get("operator_name", "").strip(),
              "operator_address": form.get("operator_address", "").strip()}
    # The backup tiers' fields (a form without them leaves them as they are).
    for name in ("backup_tier_basic_hourly", "backup_tier_extended_hourly"):
        if name in form:
            values[name] = forms.required_money(name, currency)
    for name in ("backup_tier_basic_days", "backup_tier_extended_days",
                 "backup_tier_extended_weeks"):
        if name in form:
            values[name] = forms.required_integer(name)
    prepaid.set_operator_settings(current_principal(), values)
    return forms.back("admin_billing.settings", "Billing settings saved.")
