"""The Settings page for administrators: the run-time settings by group, each form saving
its group (services/ops/site_settings.py decides), and a test mail; the Branding page
(texts, colour, logo and favicon uploads: services/ops/branding.py).

A pinned setting (given in the environment, the config file or the overrides) is shown
read-only with where it comes from. A secret is never put into the page: its field is
empty, says whether one is set, and is changed only when something is typed or the
"remove" box is ticked.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import InvalidRequest
from appliance.services import branding
from appliance.services.ops import branding as brand_admin
from appliance.services.ops import site_settings
from appliance.web import forms
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_settings", __name__, url_prefix="/admin")
GROUPS = {key: names for key, _, names in site_settings.GROUPS}
LABELS = {
    "SITE_NAME": "Site name", "SUPPORT_EMAIL": "Support email",
    "SIGNUP": "Who may sign up", "REQUIRE_VERIFIED_EMAIL": "A confirmed email address is "
    "needed to create instances, API keys and webhooks",
    "NOTIFY_ADMINS_OF_SIGNUPS": "Tell the administrators of "
    "every signup", "SMTP_HOST": "SMTP server", "SMTP_PORT": "Port",
    "SMTP_SECURITY": "Security", "SMTP_USER": "User name", "SMTP_PASSWORD": "Password",
    "SMTP_FROM": "Sender (From)", "WEBHOOKS_ALLOW_PRIVATE": "Webhooks may reach private LAN "
    "addresses", "SESSION_IDLE_MINUTES": "Signed out after idle (minutes)",
    "SESSION_MAX_HOURS": "Longest sign-in (hours)",
    "EVENT_RETENTION_DAYS": "Keep events and logs (days)",
}
GROUP_NOTES = {
    "site": "Signup: open (anyone), invite (with an invitation from Invitations) or closed.",
    "mail": "Without an SMTP server mail is kept in the mail outbox. Security: starttls "
            "(usually port 587), tls (465) or none.",
    "webhooks": "Loopback, link-local and cloud metadata addresses are always refused.",
    "sessions": "The longest sign-in applies to sign-ins after a change; the idle time at "
                "once.",
    "retention": "Events, webhook deliveries and notifications older than this are deleted "
                 "daily.",
}


def _page(status: int = 200, fragment: str | None = None, **context):
    found = {state.name: state for state in site_settings.states(current_principal())}
    context.setdefault("form", {})
    context.setdefault("section", None)
    context.setdefault("notice", request.args.get("notice"))
    context.setdefault("warning", request.args.get("warning"))
    return render_template("admin/settings.html", states=found, groups=site_settings.GROUPS,
                           labels=LABELS, notes=GROUP_NOTES, **context), status


@bp.get("/settings")
@admin_required
def page():
    return _page()


def _posted(names: tuple[str, ...]) -> dict[str, object]:
    """The group's values as the form sent them (pinned ones are not in the form)."""
    values: dict[str, object] = {}
    for name in names:
        found = site_settings.state(name)
        field = name.lower()
        if found.pinned:
            continue
        if found.kind == "boolean":
            values[name] = forms.checked(field)
        elif found.kind == "password":
            if forms.checked(f"clear_{field}"):
                values[name] = None
            elif request.form.get(field):
                values[name] = request.form[field]
        elif found.kind == "number":
            values[name] = forms.required_integer(field)
        else:
            values[name] = request.form.get(field, "").strip()
    return values


@bp.post("/settings/<group>")
@admin_required
@forms.rerender_on_error(_page, "{group}")
def save(group: str):
    names = GROUPS.get(group)
    if names is None:
        raise InvalidRequest("No such group of settings.", field="group")
    site_settings.change(current_principal(), _posted(names))
    title = next(title for key, title, _ in site_settings.GROUPS if key == group)
    return redirect(url_for("admin_settings.page", notice=f"{title}: saved.",
                            _anchor=f"settings-{group}"))


@bp.post("/settings/test-mail")
@admin_required
@forms.rerender_on_error(_page, "test-mail")
def test_mail():
    row, answer = site_settings.send_test_mail(current_principal(),
                                               request.form.get("to") or None)
    if row.status == "sent":
        return redirect(url_for("admin_settings.page", _anchor="settings-mail",
                                notice=f"Test mail sent to {row.to_addr}. The server "
                                       f"answered: {answer}"))
    return redirect(url_for("admin_settings.page", _anchor="settings-mail",
                            warning=f"The test mail to {row.to_addr} was not sent: {answer}"))


# Branding ------------------------------------------------------------------------------

BRANDING_LABELS = {"SITE_NAME": "Site name", "BRANDING_ACCENT_COLOR": "Accent colour",
                   "BRANDING_FOOTER_TEXT": "Footer text",
                   "BRANDING_SUPPORT_URL": "Support page (URL)"}


def _branding_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    context.setdefault("form", {})
    context.setdefault("section", None)
    context.setdefault("notice", request.args.get("notice"))
    return render_template(
        "admin/branding.html", brand=brand_admin.get(principal),
        states={state.name: state for state in brand_admin.texts(principal)},
        labels=BRANDING_LABELS, max_kb=branding.IMAGE_MAX_BYTES // 1024, **context), status


@bp.get("/settings/branding")
@admin_required
def branding_page():
    return _branding_page()


@bp.post("/settings/branding")
@admin_required
@forms.rerender_on_error(_branding_page, "texts")
def save_branding():
    values = {name: request.form.get(name.lower(), "").strip()
              for name in site_settings.BRANDING_NAMES
              if not site_settings.state(name).pinned}
    brand_admin.change(current_principal(), values)
    return redirect(url_for("admin_settings.branding_page", notice="Branding: saved."))


@bp.post("/settings/branding/<kind>")
@admin_required
@forms.rerender_on_error(_branding_page, "{kind}")
def upload_branding_image(kind: str):
    upload = request.files.get(kind)
    brand_admin.set_image(current_principal(), kind,
                          upload.read(branding.IMAGE_MAX_BYTES + 1) if upload else b"")
    return redirect(url_for("admin_settings.branding_page",
                            notice=f"The {kind} is uploaded.", _anchor=f"branding-{kind}"))


@bp.post("/settings/branding/<kind>/remove")
@admin_required
@forms.rerender_on_error(_branding_page, "{kind}")
def remove_branding_image(kind: str):
    brand_admin.remove_image(current_principal(), kind)
    return redirect(url_for("admin_settings.branding_page",
                            notice=f"The {kind} is back to the built-in one.",
                            _anchor=f"branding-{kind}"))
