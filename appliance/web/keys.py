"""Dashboard pages for API keys, SSH keys and account limits.

A new or rotated API key's secret is rendered once, on the answer to the POST that made
it (never in a URL, never stored, `Cache-Control: no-store`); the list shows only its
prefix and last four characters. The services decide everything else.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services import clock, projects
from appliance.services.accounts import api_keys, ssh_keys
from appliance.services.accounts.sessions import SCOPES
from appliance.services.limits import quotas
from appliance.web.projects import render_fragment_or_page
from appliance.web.session import current_principal, login_required

bp = Blueprint("keys", __name__)

EXPIRY_CHOICES = (("30", "30 days"), ("90", "90 days"), ("365", "1 year"),
                  ("never", "Never"), ("date", "On a date"))
GRACE_CHOICES = ((0, "No grace: the old secret stops now"), (3600, "1 hour"),
                 (86400, "24 hours"), (604800, "7 days"))


def form_int(name: str) -> int | None:
    """A whole number from the form, None when left empty; 400 naming the field else."""
    raw = request.form.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest("Enter a whole number.", field=name) from None


def _failed(page, exc: ApplianceError, section: str, **context):
    return page(exc.status, error=exc, error_field=exc.details.get("field"), section=section,
                **context)


# API keys ----------------------------------------------------------------------------


def _expires_at() -> dt.datetime | None:
    """The expiry picked on the form: a number of days from now, a date, or never."""
    choice = request.form.get("expires_in", "90")
    if choice == "never":
        return None
    if choice == "date":
        try:
            day = dt.date.fromisoformat(request.form.get("expires_on", ""))
        except ValueError:
            raise InvalidRequest("Pick the day the key stops working.",
                                 field="expires_at") from None
        # Valid through the chosen day (UTC): it stops at the midnight that ends it.
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.UTC)
    if not choice.isdigit():
        raise InvalidRequest("Pick when the key expires.", field="expires_at")
    return clock.now() + dt.timedelta(days=int(choice))


def _keys_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    rows, next_cursor = api_keys.list_keys(principal, cursor=request.args.get("cursor") or None)
    mine = projects.all_projects(principal)
    context.setdefault("form", {})
    context.setdefault("section", None)
    scopes = [s for s in SCOPES if s != "admin" or principal.is_admin]
    return render_fragment_or_page(
        "keys/index.html", fragment, status, keys=rows, next_cursor=next_cursor,
        project_names={a.project.id: a.project.name for a in mine}, my_projects=mine,
        scopes=scopes, expiry_choices=EXPIRY_CHOICES, grace_choices=GRACE_CHOICES,
        key_status=api_keys.status_of, key_scopes=api_keys.scopes_of,
        key_networks=api_keys.allowed_networks, today=clock.now().date().isoformat(),
        **context)


def _secret_page(created: api_keys.NewSecret, notice: str):
    """The one answer that carries a secret: not cached, not kept anywhere."""
    response = _keys_page(created=created, notice=notice)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/keys")
@login_required
def index():
    return _keys_page(fragment="keys/_list.html", notice=request.args.get("notice"))


@bp.post("/keys")
@login_required
def create_key():
    form = request.form
    try:
        created = api_keys.create_key(
            current_principal(), form.get("name", ""), form.getlist("scopes"),
            project_id=form.get("project_id") or None, expires_at=_expires_at(),
            allowed_ips=form.get("allowed_ips", "").split() or None,
            rate_limit_rpm=form_int("rate_limit_rpm"))
    except ApplianceError as exc:
        return _failed(_keys_page, exc, "create", form=form)
    return _secret_page(created, f"Key {created.key.name} created.")


@bp.post("/keys/<key_id>/rotate")
@login_required
def rotate_key(key_id: str):
    try:
        grace = form_int("grace_seconds") or 0
        rotated = api_keys.rotate_key(current_principal(), key_id, grace)
    except ApplianceError as exc:
        return _failed(_keys_page, exc, "list")
    return _secret_page(rotated, f"Key {rotated.key.name} has a new secret.")


@bp.post("/keys/<key_id>/revoke")
@login_required
def revoke_key(key_id: str):
    try:
        key = api_keys.revoke_key(current_principal(), key_id)
    except ApplianceError as exc:
        return _failed(_keys_page, exc, "list", fragment="keys/_list.html")
    notice = f"Key {key.name} revoked."
    if request.headers.get("HX-Request"):
        return _keys_page(fragment="keys/_list.html", notice=notice)
    return redirect(url_for("keys.index", notice=notice))


# SSH keys ----------------------------------------------------------------------------


def _ssh_page(status: int = 200, **context):
    rows, next_cursor = ssh_keys.list_keys(current_principal(),
                                           cursor=request.args.get("cursor") or None)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return render_template("account/ssh_keys.html", ssh_keys=rows, next_cursor=next_cursor,
                           **context), status


@bp.get("/account/ssh-keys")
@login_required
def ssh_keys_page():
    return _ssh_page(notice=request.args.get("notice"))


@bp.post("/account/ssh-keys")
@login_required
def add_ssh_key():
    public_key, name = request.form.get("public_key", ""), request.form.get("name", "")
    try:
        key = ssh_keys.add_key(current_principal(), public_key, name)
    except ApplianceError as exc:
        return _failed(_ssh_page, exc, "add", form={"public_key": public_key, "name": name})
    return redirect(url_for("keys.ssh_keys_page", notice=f"SSH key {key.name} added."))


@bp.post("/account/ssh-keys/<ssh_key_id>/delete")
@login_required
def delete_ssh_key(ssh_key_id: str):
    try:
        ssh_keys.delete_key(current_principal(), ssh_key_id)
    except ApplianceError as exc:
        return _failed(_ssh_page, exc, "list")
    return redirect(url_for("keys.ssh_keys_page", notice="SSH key deleted."))


# Limits ------------------------------------------------------------------------------


def _limits_page(status: int = 200, **context):
    principal = current_principal()
    requests, next_cursor = quotas.list_requests(principal,
                                                 cursor=request.args.get("cursor") or None)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return render_template("account/limits.html", limits=quotas.limits(principal.user),
                           limit_requests=requests, next_cursor=next_cursor,
                           resources=quotas.RESOURCES_BY_NAME, **context), status


@bp.get("/account/limits")
@login_required
def limits_page():
    return _limits_page(notice=request.args.get("notice"))


@bp.post("/account/limits/requests")
@login_required
def request_limit():
    form = request.form
    try:
        requested = form_int("requested")
        if requested is None:
            raise InvalidRequest("How much do you need?", field="requested")
        quotas.request_increase(current_principal(), form.get("resource", ""), requested,
                                form.get("reason", ""))
    except ApplianceError as exc:
        return _failed(_limits_page, exc, "request", form=form)
    return redirect(url_for("keys.limits_page",
                            notice="Request sent; an administrator will decide on it."))
