"""Dashboard pages for administrators: users, invitations, mail outbox, audit log."""

from __future__ import annotations

import json

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.api.principal import client_ip
from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import admin, mail
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


@bp.get("/")
@admin_required
def home():
    return redirect(url_for("admin.users"))


@bp.get("/users")
@admin_required
def users():
    q = request.args.get("q", "")
    status = request.args.get("status") or None
    rows, cursor = admin.search_users(current_principal(), q, status, _limit(),
                                      request.args.get("cursor"))
    return _render("admin/users.html", "admin/_users_table.html", users=rows,
                   next_cursor=cursor, q=q, status=status or "")


@bp.get("/users/<user_id>")
@admin_required
def user(user_id: str):
    target = admin.get_user(current_principal(), user_id)
    activity, _ = admin.list_audit_log(current_principal(), actor=user_id, limit=20)
    return render_template("admin/user.html", target=target, activity=activity,
                           notice=request.args.get("notice"), json=json)


def _act(user_id: str, action, notice: str):
    try:
        action()
    except ApplianceError as exc:
        target = admin.get_user(current_principal(), user_id)
        activity, _ = admin.list_audit_log(current_principal(), actor=user_id, limit=20)
        return render_template("admin/user.html", target=target, activity=activity,
                               error=exc, json=json), exc.status
    return redirect(url_for("admin.user", user_id=user_id, notice=notice))


@bp.post("/users/<user_id>/suspend")
@admin_required
def suspend(user_id: str):
    reason = request.form.get("reason", "")
    return _act(user_id, lambda: admin.suspend_user(current_principal(), user_id, reason,
                                                    client_ip()), "Account suspended.")


@bp.post("/users/<user_id>/unsuspend")
@admin_required
def unsuspend(user_id: str):
    return _act(user_id, lambda: admin.unsuspend_user(current_principal(), user_id,
                                                      client_ip()), "Suspension lifted.")


@bp.post("/users/<user_id>/role")
@admin_required
def role(user_id: str):
    new_role = request.form.get("role", "")
    return _act(user_id, lambda: admin.set_role(current_principal(), user_id, new_role,
                                                client_ip()), f"Role set to {new_role}.")


@bp.post("/users/<user_id>/resend-verification")
@admin_required
def resend_verification(user_id: str):
    return _act(user_id, lambda: admin.resend_verification(current_principal(), user_id,
                                                           client_ip()),
                "Verification link sent.")


@bp.route("/invites", methods=["GET", "POST"])
@admin_required
def invites():
    created = None
    error = None
    if request.method == "POST":
        try:
            invite, code = admin.create_invite(current_principal(),
                                               request.form.get("email") or None, client_ip())
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
    action = request.args.get("action") or None
    rows, cursor = admin.list_audit_log(current_principal(), action, None, _limit(),
                                        request.args.get("cursor"))
    return _render("admin/audit.html", "admin/_audit_table.html", rows=rows,
                   next_cursor=cursor, action=action or "", json=json)
