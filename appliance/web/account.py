"""Dashboard pages of the signed-in user: overview, profile, password, sessions, MFA."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from appliance import config
from appliance.errors import ApplianceError
from appliance.http import client_ip
from appliance.services.accounts import mfa, sessions, users
from appliance.web import overview_metrics
from appliance.web.session import current_principal, login_required

bp = Blueprint("account", __name__)


@bp.get("/dashboard")
@login_required
def overview():
    from appliance.web.billing import overview_cards
    from appliance.web.projects import render_fragment_or_page

    principal = current_principal()
    activity = overview_metrics.activity(principal,
                                         overview_metrics.window_of(request.args.get("window")))
    fragment = "dashboard/_activity.html" if request.args.get("part") == "activity" else None
    return render_fragment_or_page("dashboard/overview.html", fragment,
                                   **overview_cards(principal), **activity)


def _account_page(status: int = 200, **context):
    principal = current_principal()
    context.setdefault("mfa_enabled", mfa.is_enabled(principal.user))
    context.setdefault("recovery_left", mfa.remaining_recovery_codes(principal.user)
                       if context["mfa_enabled"] else 0)
    context.setdefault("session_list", sessions.list_sessions(principal)[0])
    context.setdefault("form", {})
    fragment = request.headers.get("HX-Request") and context.pop("fragment", None)
    return render_template(fragment or "account/index.html", **context), status


def _failed(exc: ApplianceError, section: str, **context):
    return _account_page(exc.status, error=exc, section=section,
                         error_field=exc.details.get("field"), **context)


@bp.get("/account")
@login_required
def index():
    return _account_page(notice=request.args.get("notice"))


@bp.post("/account/profile")
@login_required
def update_profile():
    try:
        _, sent = users.update_profile(
            current_principal(), display_name=request.form.get("display_name"),
            email=request.form.get("email") or None,
            current_password=request.form.get("current_password"))
    except ApplianceError as exc:
        return _failed(exc, "profile")
    notice = ("Saved. Confirm the new address from the link we mailed to it."
              if sent else "Profile saved.")
    return redirect(url_for("account.index", notice=notice))


@bp.post("/account/password")
@login_required
def change_password():
    try:
        ended = users.change_password(current_principal(),
                                         request.form.get("current_password", ""),
                                         request.form.get("new_password", ""))
    except ApplianceError as exc:
        return _failed(exc, "password")
    return redirect(url_for("account.index",
                            notice=f"Password changed; {ended} other session(s) signed out."))


@bp.post("/account/resend-verification")
@login_required
def resend_verification():
    try:
        users.resend_verification(current_principal().user)
    except ApplianceError as exc:
        return _failed(exc, "profile")
    return redirect(url_for("account.index", notice="A new confirmation link is on its way."))


@bp.post("/account/sessions/<session_id>/revoke")
@login_required
def revoke_session(session_id: str):
    try:
        sessions.revoke_session(current_principal(), session_id)
    except ApplianceError as exc:
        return _failed(exc, "sessions")
    if request.headers.get("HX-Request"):
        return _account_page(fragment="account/_sessions.html")
    return redirect(url_for("account.index", notice="Session signed out."))


@bp.post("/account/sessions/revoke-others")
@login_required
def revoke_other_sessions():
    count = sessions.revoke_other_sessions(current_principal())
    return redirect(url_for("account.index", notice=f"{count} other session(s) signed out."))


@bp.post("/account/mfa/enroll")
@login_required
def mfa_enroll():
    try:
        enrolment = mfa.begin_enrolment(current_principal().user,
                                        config.active()["SITE_NAME"])
    except ApplianceError as exc:
        return _failed(exc, "mfa")
    return _account_page(enrolment=enrolment, section="mfa")


@bp.post("/account/mfa/confirm")
@login_required
def mfa_confirm():
    try:
        codes = mfa.confirm_enrolment(current_principal().user, request.form.get("code", ""),
                                      ip=client_ip())
    except ApplianceError as exc:
        # Show the same secret again so the user can retry with the next code.
        enrolment = mfa.pending_enrolment(current_principal().user,
                                              config.active()["SITE_NAME"])
        return _failed(exc, "mfa", enrolment=enrolment)
    return _account_page(recovery_codes=codes, section="mfa", mfa_enabled=True)


@bp.post("/account/mfa/disable")
@login_required
def mfa_disable():
    try:
        users.disable_mfa(current_principal(), request.form.get("password", ""),
                             request.form.get("code", ""))
    except ApplianceError as exc:
        return _failed(exc, "mfa-off")
    return redirect(url_for("account.index", notice="Two-factor sign-in is off."))


@bp.post("/account/mfa/recovery-codes")
@login_required
def mfa_recovery_codes():
    try:
        codes = users.regenerate_recovery_codes(current_principal(),
                                                   request.form.get("code", ""))
    except ApplianceError as exc:
        return _failed(exc, "mfa-codes")
    return _account_page(recovery_codes=codes, section="mfa")

