"""Dashboard pages of the signed-in user: overview, profile, password, sessions, MFA."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance import config
from appliance.errors import ApplianceError
from appliance.http import client_ip
from appliance.services.accounts import mfa, sessions, users
from appliance.web import forms, overview_metrics
from appliance.web.session import current_principal, login_required

bp = Blueprint("account", __name__)


@bp.get("/dashboard")
@login_required
def overview():
    principal = current_principal()
    activity = overview_metrics.activity(principal,
                                         overview_metrics.window_of(request.args.get("window")))
    fragment = "dashboard/_activity.html" if request.args.get("part") == "activity" else None
    return forms.render_fragment_or_page("dashboard/overview.html", fragment,
                                   **overview_metrics.overview_cards(principal), **activity)


def _account_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    context.setdefault("mfa_enabled", mfa.is_enabled(principal.user))
    context.setdefault("recovery_left", mfa.remaining_recovery_codes(principal.user)
                       if context["mfa_enabled"] else 0)
    context.setdefault("session_list", sessions.list_sessions(principal)[0])
    context.setdefault("form", {})
    fragment = fragment if request.headers.get("HX-Request") else None
    return render_template(fragment or "account/index.html", **context), status


@bp.get("/account")
@login_required
def index():
    return _account_page(notice=request.args.get("notice"))


@bp.post("/account/profile")
@login_required
@forms.rerender_on_error(_account_page, "profile", keep_form=False)
def update_profile():
    _, sent = users.update_profile(
        current_principal(), display_name=request.form.get("display_name"),
        email=request.form.get("email") or None,
        current_password=request.form.get("current_password"))
    return forms.back("account.index",
                      "Saved. Confirm the new address from the link we mailed to it."
                      if sent else "Profile saved.")


@bp.post("/account/password")
@login_required
@forms.rerender_on_error(_account_page, "password", keep_form=False)
def change_password():
    ended = users.change_password(current_principal(),
                                  request.form.get("current_password", ""),
                                  request.form.get("new_password", ""))
    return forms.back("account.index", f"Password changed; {ended} other session(s) signed out.")


@bp.post("/account/resend-verification")
@login_required
@forms.rerender_on_error(_account_page, "profile", keep_form=False)
def resend_verification():
    users.resend_verification(current_principal().user)
    return forms.back("account.index", "A new confirmation link is on its way.")


@bp.post("/account/sessions/<session_id>/revoke")
@login_required
@forms.rerender_on_error(_account_page, "sessions", keep_form=False)
def revoke_session(session_id: str):
    sessions.revoke_session(current_principal(), session_id)
    if request.headers.get("HX-Request"):
        return _account_page(fragment="account/_sessions.html")
    return forms.back("account.index", "Session signed out.")


@bp.post("/account/sessions/revoke-others")
@login_required
def revoke_other_sessions():
    count = sessions.revoke_other_sessions(current_principal())
    return forms.back("account.index", f"{count} other session(s) signed out.")


# MFA: the answers show a secret or recovery codes once, so they are pages, not redirects.


@bp.post("/account/mfa/enroll")
@login_required
@forms.rerender_on_error(_account_page, "mfa", keep_form=False)
def mfa_enroll():
    enrolment = mfa.begin_enrolment(current_principal().user, config.active()["SITE_NAME"])
    return _account_page(enrolment=enrolment, section="mfa")


@bp.post("/account/mfa/confirm")
@login_required
def mfa_confirm():
    user = current_principal().user
    try:
        codes = mfa.confirm_enrolment(user, request.form.get("code", ""), ip=client_ip())
    except ApplianceError as exc:
        # Show the same secret again so the user can retry with the next code.
        enrolment = mfa.pending_enrolment(user, config.active()["SITE_NAME"])
        return forms.failed(_account_page, exc, "mfa", enrolment=enrolment, form={})
    return _account_page(recovery_codes=codes, section="mfa", mfa_enabled=True)


@bp.post("/account/mfa/disable")
@login_required
@forms.rerender_on_error(_account_page, "mfa-off", keep_form=False)
def mfa_disable():
    users.disable_mfa(current_principal(), request.form.get("password", ""),
                      request.form.get("code", ""))
    return forms.back("account.index", "Two-factor sign-in is off.")


@bp.post("/account/mfa/recovery-codes")
@login_required
@forms.rerender_on_error(_account_page, "mfa-codes", keep_form=False)
def mfa_recovery_codes():
    codes = users.regenerate_recovery_codes(current_principal(), request.form.get("code", ""))
    return _account_page(recovery_codes=codes, section="mfa")
