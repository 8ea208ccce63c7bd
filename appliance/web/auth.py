"""Dashboard pages for signing up, in and out, email links, and the first-run set-up."""

from __future__ import annotations

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from appliance import invocation
from appliance.errors import ApplianceError, NotFound
from appliance.http import client_ip
from appliance.services.accounts import sessions, setup_link, users
from appliance.web import forms
from appliance.web.session import current_principal, safe_next, sign_in_browser

bp = Blueprint("auth", __name__)

HOME = "/dashboard"


def _failed(template: str, exc: ApplianceError, **context):
    """Re-render a form with the service's message next to the field it names."""
    return forms.failed(forms.template_page(template), exc, **context)


@bp.route("/signin", methods=["GET", "POST"])
def signin():
    next_url = safe_next(request.values.get("next"), HOME)
    if current_principal() is not None:
        return redirect(next_url)
    if request.method == "GET":
        return render_template("auth/signin.html", next=next_url, form={})
    form = forms.values("email", "password")
    try:
        result = users.sign_in(form["email"], form["password"], ip=client_ip())
    except ApplianceError as exc:
        return _failed("auth/signin.html", exc, next=next_url, form={"email": form["email"]})
    if result.mfa_required:
        return render_template("auth/mfa.html", mfa_token=result.mfa_token, next=next_url)
    sign_in_browser(result.user)
    return redirect(next_url)


@bp.post("/signin/mfa")
def signin_mfa():
    next_url = safe_next(request.form.get("next"), HOME)
    mfa_token = request.form.get("mfa_token", "")
    try:
        user = users.complete_mfa(mfa_token, request.form.get("code", ""), ip=client_ip())
    except ApplianceError as exc:
        if exc.code in ("invalid_token", "token_expired"):
            return _failed("auth/signin.html", exc, next=next_url, form={})
        return _failed("auth/mfa.html", exc, mfa_token=mfa_token, next=next_url)
    sign_in_browser(user)
    return redirect(next_url)


@bp.post("/signout")
def signout():
    principal = current_principal()
    if principal is not None:
        sessions.end_session(principal)
        g.clear_session_cookie = True
    return redirect(url_for("auth.signin", signed_out=1))


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    if current_principal() is not None:
        return redirect(HOME)
    if request.method == "GET":
        return render_template("auth/signup.html",
                               form={"invite_code": request.args.get("invite", "")})
    form = forms.values("email", "password", "display_name", "invite_code")
    try:
        user = users.signup(form["email"], form["password"], form["display_name"],
                               form["invite_code"] or None, ip=client_ip())
    except ApplianceError as exc:
        form.pop("password")
        return _failed("auth/signup.html", exc, form=form)
    sign_in_browser(user)
    return redirect(url_for("auth.check_email"))


@bp.get("/signup/check-email")
def check_email():
    return render_template("auth/check_email.html")


def _link_page(template: str, token: str, purpose: str):
    """GET of a mailed link: its form, or at once why the link cannot be used (used,
    unknown or expired), checked without using it up."""
    try:
        users.check_email_link(token, purpose)
    except ApplianceError as exc:
        return render_template(template, token=token, error=exc,
                               error_field=exc.details.get("field")), exc.status
    return render_template(template, token=token)


@bp.route("/verify-email", methods=["GET", "POST"])
def verify_email():
    # GET only shows a button: mail scanners that follow links must not use the token.
    token = request.values.get("token", "")
    if request.method == "GET":
        return _link_page("auth/verify_email.html", token, "verify")
    try:
        users.verify_email(token, ip=client_ip())
    except ApplianceError as exc:
        return _failed("auth/verify_email.html", exc, token=token)
    return render_template("auth/verify_email.html", verified=True)


@bp.route("/forgot-password", methods=["GET", "POST"])
def forgot_password():
    if request.method == "GET":
        return render_template("auth/forgot.html", form={})
    email = request.form.get("email", "")
    try:
        users.forgot_password(email, ip=client_ip())
    except ApplianceError as exc:
        return _failed("auth/forgot.html", exc, form={"email": email})
    return render_template("auth/forgot.html", sent=True, form={"email": email})


@bp.route("/reset-password", methods=["GET", "POST"])
def reset_password():
    token = request.values.get("token", "")
    if request.method == "GET":
        return _link_page("auth/reset.html", token, "reset")
    try:
        users.reset_password(token, request.form.get("password", ""), ip=client_ip())
    except ApplianceError as exc:
        return _failed("auth/reset.html", exc, token=token)
    return redirect(url_for("auth.signin", reset=1))


@bp.route("/setup", methods=["GET", "POST"])
def setup():
    """First run: create the administrator with the one-time token from the server log."""
    if users.user_count() > 0:
        raise NotFound("The appliance is already set up; sign in instead.", code="setup_done")
    data_dir = current_app.config["APPLIANCE"]["DATA_DIR"]
    commands = {"setup_link": invocation.command("setup-link", data_dir=data_dir),
                "create_admin": invocation.command("create-admin", "--email",
                                                   "you@example.com", data_dir=data_dir)}
    if request.method == "GET":
        return render_template("auth/setup.html", commands=commands,
                               form={"token": request.args.get("token", "")})
    form = forms.values("token", "email", "password", "display_name")
    try:
        user = setup_link.create_first_admin(form["token"], form["email"], form["password"],
                                             form["display_name"], ip=client_ip())
    except ApplianceError as exc:
        form.pop("password")
        return _failed("auth/setup.html", exc, form=form, commands=commands)
    current_app.extensions.pop("setup_token", None)
    sign_in_browser(user)
    return redirect(HOME)
