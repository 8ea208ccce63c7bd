"""Dashboard pages for administrators: users, invitations, limits, mail outbox, audit log,
backups of the appliance."""

from __future__ import annotations

import functools
import json

from flask import Blueprint, render_template, request

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import projects
from appliance.services.accounts import admin, mail
from appliance.services.limits import quotas
from appliance.services.ops import selfbackup
from appliance.web import forms
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _limit() -> int:
    try:
        return min(max(int(request.args.get("limit", 50)), 1), 100)
    except ValueError:
        raise InvalidRequest("limit must be a number.", field="limit") from None


def _render(template: str, fragment: str | None = None, **context):
    """The whole page, or only the list fragment when htmx asks for it."""
    if fragment and request.headers.get("HX-Request"):
        return render_template(fragment, **context)
    return render_template(template, **context)


@bp.get("/users")
@admin_required
def users():
    q = request.args.get("q", "")
    status = request.args.get("status") or None
    rows, cursor = admin.search_users(current_principal(), q, status, _limit(),
                                      request.args.get("cursor"))
    return _render("admin/users.html", "admin/_users_table.html", users=rows,
                   next_cursor=cursor, q=q, status=status or "")


def _user_page(user_id: str, status: int = 200, fragment: str | None = None, **context):
    target = admin.get_user(current_principal(), user_id)
    activity, _ = admin.list_audit_log(current_principal(), actor=user_id, limit=20)
    return render_template("admin/user.html", target=target, activity=activity,
                           user_projects=projects.projects_of(target),
                           limits=quotas.limits(target), json=json, **context), status


@bp.get("/users/<user_id>")
@admin_required
def user(user_id: str):
    return _user_page(user_id, notice=request.args.get("notice"))


def _user_done(user_id: str, notice: str):
    return forms.back("admin.user", notice, user_id=user_id)


@bp.post("/users/<user_id>/suspend")
@admin_required
@forms.rerender_on_error(_user_page, keep_form=False)
def suspend(user_id: str):
    until = forms.utc_datetime("until")
    admin.suspend_user(current_principal(), user_id, request.form.get("reason", ""), until)
    return _user_done(user_id, f"Account suspended until {until:%Y-%m-%d %H:%M} UTC."
                      if until else "Account suspended.")


@bp.post("/users/<user_id>/unsuspend")
@admin_required
@forms.rerender_on_error(_user_page, keep_form=False)
def unsuspend(user_id: str):
    admin.unsuspend_user(current_principal(), user_id)
    return _user_done(user_id, "Suspension lifted.")


@bp.post("/users/<user_id>/role")
@admin_required
@forms.rerender_on_error(_user_page, keep_form=False)
def role(user_id: str):
    new_role = request.form.get("role", "")
    admin.set_role(current_principal(), user_id, new_role)
    return _user_done(user_id, f"Role set to {new_role}.")


@bp.post("/users/<user_id>/resend-verification")
@admin_required
@forms.rerender_on_error(_user_page, keep_form=False)
def resend_verification(user_id: str):
    admin.resend_verification(current_principal(), user_id)
    return _user_done(user_id, "Verification link sent.")


@bp.post("/users/<user_id>/limits")
@admin_required
def set_limit(user_id: str):
    """Override one of the user's limits; an empty value puts the default back."""
    resource = request.form.get("resource", "")
    try:
        quotas.set_override(current_principal(), user_id, resource, forms.integer("value"))
    except ApplianceError as exc:
        return forms.failed(functools.partial(_user_page, user_id), exc,
                            f"limit-{resource}", form={})
    return _user_done(user_id, "Limit saved.")


@bp.route("/invites", methods=["GET", "POST"])
@admin_required
def invites():
    created = None
    error = None
    if request.method == "POST":
        try:
            invite, code = admin.create_invite(current_principal(),
                                               request.form.get("email") or None)
            created = {"invite": invite, "code": code,
                       "url": mail.link(f"/signup?invite={code}")}
        except ApplianceError as exc:
            error = exc
    return render_template("admin/invites.html", created=created, error=error,
                           error_field=error.details.get("field") if error else None)


@bp.get("/mail")
@admin_required
def outbox():
    status = request.args.get("status") or None
    rows, cursor = admin.list_mail(current_principal(), status, _limit(),
                                   request.args.get("cursor"))
    return _render("admin/outbox.html", "admin/_outbox_list.html", mails=rows,
                   next_cursor=cursor, status=status or "")


@bp.get("/audit")
@admin_required
def audit_log():
    action = (request.args.get("action") or "").strip() or None
    actor = (request.args.get("actor") or "").strip() or None
    rows, cursor = admin.list_audit_log(current_principal(), action, None, _limit(),
                                        request.args.get("cursor"), actor_email=actor)
    return _render("admin/audit.html", "admin/_audit_table.html", rows=rows,
                   next_cursor=cursor, action=action or "", actor=actor or "", json=json)


@bp.get("/backups")
@admin_required
def self_backup():
    return render_template("admin/self_backup.html",
                           backup=selfbackup.status(current_principal()))


STATUSES = ("pending", "approved", "declined")


def _limits_page(status: int = 200, fragment: str | None = None, **context):
    wanted = request.args.get("status", "pending")
    filter_status = wanted if wanted in STATUSES else None
    rows, cursor = quotas.list_all_requests(current_principal(), filter_status, _limit(),
                                            request.args.get("cursor"))
    context.setdefault("section", None)
    context.setdefault("form", {})
    return render_template("admin/limits.html", requests=rows, next_cursor=cursor,
                           status=filter_status or "", defaults=quotas.defaults(),
                           resources=quotas.RESOURCES,
                           resources_by_name=quotas.RESOURCES_BY_NAME, **context), status


@bp.get("/limits")
@admin_required
def limits():
    return _limits_page(notice=request.args.get("notice"))


@bp.post("/limits/requests/<request_id>/<decision>")
@admin_required
def decide_limit_request(request_id: str, decision: str):
    if decision not in ("approve", "decline"):
        raise InvalidRequest("Approve or decline.", field="decision")
    try:
        row = quotas.decide(current_principal(), request_id, decision == "approve",
                            request.form.get("note", ""))
    except ApplianceError as exc:
        return forms.failed(_limits_page, exc, f"request-{request_id}", form={})
    return forms.back("admin.limits", f"Request {row.status}.",
                      status=request.args.get("status", "pending"))


@bp.post("/limits/defaults")
@admin_required
@forms.rerender_on_error(_limits_page, "defaults")
def limit_defaults():
    values = {r.name: forms.integer(r.name) for r in quotas.RESOURCES}
    quotas.set_defaults(current_principal(),
                        {name: value for name, value in values.items() if value is not None})
    return forms.back("admin.limits", "Default limits saved.")
