"""The admin home page - the operator's overview - and the lists behind its figures that
had no page: every account's jobs, webhooks, and credit or usage of a month.

The figures are services/ops/overview.py's; every one is a link to the list that counts
the same rows (instances by state, billing accounts by status, the month's ledger
entries, pending limit requests, failed jobs, disabled webhooks, failing mail).
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance.errors import InvalidRequest
from appliance.services.billing import books
from appliance.services.instances import nodes, operator
from appliance.services.ops import checklist, overview
from appliance.services.webhooks import endpoints
from appliance.web import forms
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_overview", __name__, url_prefix="/admin")
PER_PAGE = 50


def _hours() -> int | None:
    raw = request.args.get("within_hours", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest("within_hours is a whole number of hours.",
                             field="within_hours") from None


def _home(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    found = overview.overview(principal)
    context.setdefault("notice", request.args.get("notice"))
    return render_template("admin/home.html", o=found, failed_hours=overview.FAILED_JOBS_HOURS,
                           checklist=checklist.checklist(principal),
                           **forms.money_context(found.books.currency), **context), status


@bp.get("/")
@admin_required
def home():
    return _home()


@bp.post("/checklist/starter-plans")
@admin_required
@forms.rerender_on_error(_home, "checklist")
def starter_plans():
    made = checklist.add_starter_plans(current_principal())
    return forms.back("admin_catalog.plan_list",
                      f"Added {', '.join(plan.name for plan in made)}: change their prices "
                      "to yours.")


@bp.post("/checklist/local-engines")
@admin_required
@forms.rerender_on_error(_home, "checklist")
def local_engines():
    found = nodes.register_missing_local_engines(current_principal())
    if not found:
        return forms.back("admin_overview.home", "No other local engine answered.")
    return forms.back("admin_catalog.node_list",
                      "Registered " + ", ".join(node.name for node in found) + ".")


@bp.get("/jobs")
@admin_required
def jobs():
    status = request.args.get("status") or None
    within = _hours()
    rows, cursor = operator.list_jobs(current_principal(), status, within, PER_PAGE,
                                      request.args.get("cursor") or None)
    return render_template("admin/jobs.html", rows=rows, next_cursor=cursor,
                           status=status or "", within_hours=within,
                           statuses=operator.JOB_STATUSES)


@bp.get("/webhooks")
@admin_required
def webhooks():
    status = request.args.get("status") or None
    rows, cursor = endpoints.list_every_account(current_principal(), status, PER_PAGE,
                                                request.args.get("cursor") or None)
    return render_template("admin/webhooks.html", rows=rows, next_cursor=cursor,
                           status=status or "", statuses=endpoints.STATUSES)


@bp.get("/billing/ledger")
@admin_required
def ledger():
    kind = request.args.get("kind", "credit")
    month = request.args.get("month") or None
    principal = current_principal()
    rows, cursor = books.entries(principal, kind, month, PER_PAGE,
                                 request.args.get("cursor") or None)
    found = books.totals(principal, month)
    return render_template("admin/ledger.html", rows=rows, next_cursor=cursor, kind=kind,
                           month=found.month.name,
                           total=found.credit if kind == "credit" else found.usage,
                           **forms.money_context(found.currency))
