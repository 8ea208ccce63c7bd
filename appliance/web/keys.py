"""Dashboard pages for API keys, SSH keys and account limits.

A new or rotated API key's secret is shown once, on the page the POST redirects to (so a
reload repeats nothing): `reveal.keep` holds it in memory for a minute for this session,
the GET takes it once (`Cache-Control: no-store`); it is never in a URL or on disk. The
list shows only its prefix and last four characters. The services decide everything else.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, render_template, request

from appliance.errors import InvalidRequest
from appliance.services import clock, projects
from appliance.services.accounts import api_keys, ssh_keys
from appliance.services.accounts.sessions import SCOPES
from appliance.services.limits import quotas
from appliance.web import forms, reveal
from appliance.web.session import current_principal, login_required

# Scopes of what is not built yet (firewalls and private networks): the API still accepts
# them on a key, so keys keep working once it is, but the form does not offer them.
NOT_OFFERED_YET = frozenset({"networks:write"})

bp = Blueprint("keys", __name__)

EXPIRY_CHOICES = (("30", "30 days"), ("90", "90 days"), ("365", "1 year"),
                  ("never", "Never"), ("date", "On a date"))
GRACE_CHOICES = ((0, "No grace: the old secret stops now"), (3600, "1 hour"),
                 (86400, "24 hours"), (604800, "7 days"))


# API keys ----------------------------------------------------------------------------


def _expires_at() -> dt.datetime | None:
    """The expiry picked on the form: a number of days from now, a date, or never."""
    choice = request.form.get("expires_in", "90")
    if choice == "never":
        return None
    if choice == "date":
        # Valid through the chosen day (UTC): it stops at the midnight that ends it.
        return forms.midnight_after(forms.date("expires_on", required=True,
                                               message="Pick the day the key stops working.",
                                               field="expires_at"))
    if not choice.isdigit():
        raise InvalidRequest("Pick when the key expires.", field="expires_at")
    return clock.now() + dt.timedelta(days=int(choice))


def _keys_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    rows, next_cursor = api_keys.list_keys(principal, cursor=request.args.get("cursor") or None)
    mine = projects.all_projects(principal)
    context.setdefault("form", {})
    context.setdefault("section", None)
    scopes = [s for s in SCOPES if (s != "admin" or principal.is_admin)
              and s not in NOT_OFFERED_YET]
    return forms.render_fragment_or_page(
        "keys/index.html", fragment, status, keys=rows, next_cursor=next_cursor,
        project_names={a.project.id: a.project.name for a in mine}, my_projects=mine,
        scopes=scopes, expiry_choices=EXPIRY_CHOICES, grace_choices=GRACE_CHOICES,
        key_status=api_keys.status_of, key_scopes=api_keys.scopes_of,
        key_networks=api_keys.allowed_networks, today=clock.now().date().isoformat(),
        **context)


def _show_secret(created: api_keys.NewSecret, notice: str):
    """Redirect to the list, which shows the secret once (see the module's docstring)."""
    return forms.back("keys.index", notice, **{reveal.TICKET_ARG: reveal.keep(created)})


@bp.get("/keys")
@login_required
def index():
    ticket = request.args.get(reveal.TICKET_ARG)
    response = _keys_page(fragment="keys/_list.html", notice=request.args.get("notice"),
                          created=reveal.take(ticket), already_shown=bool(ticket))
    if ticket:  # the answer may carry a secret: never cached
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/keys")
@login_required
@forms.rerender_on_error(_keys_page, "create")
def create_key():
    form = request.form
    created = api_keys.create_key(
        current_principal(), form.get("name", ""), form.getlist("scopes"),
        project_id=form.get("project_id") or None, expires_at=_expires_at(),
        allowed_ips=form.get("allowed_ips", "").split() or None,
        rate_limit_rpm=forms.integer("rate_limit_rpm"))
    return _show_secret(created, f"Key {created.key.name} created.")


@bp.post("/keys/<key_id>/rotate")
@login_required
@forms.rerender_on_error(_keys_page, "list", keep_form=False)
def rotate_key(key_id: str):
    rotated = api_keys.rotate_key(current_principal(), key_id,
                                  forms.integer("grace_seconds") or 0)
    return _show_secret(rotated, f"Key {rotated.key.name} has a new secret.")


@bp.post("/keys/<key_id>/revoke")
@login_required
@forms.rerender_on_error(_keys_page, "list", "keys/_list.html", keep_form=False)
def revoke_key(key_id: str):
    key = api_keys.revoke_key(current_principal(), key_id)
    return forms.done(_keys_page, f"Key {key.name} revoked.", "keys.index", "keys/_list.html")


# SSH keys ----------------------------------------------------------------------------


def _ssh_page(status: int = 200, fragment: str | None = None, **context):
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
@forms.rerender_on_error(_ssh_page, "add")
def add_ssh_key():
    key = ssh_keys.add_key(current_principal(), request.form.get("public_key", ""),
                           request.form.get("name", ""))
    return forms.back("keys.ssh_keys_page", f"SSH key {key.name} added.")


@bp.post("/account/ssh-keys/<ssh_key_id>/delete")
@login_required
@forms.rerender_on_error(_ssh_page, "list", keep_form=False)
def delete_ssh_key(ssh_key_id: str):
    ssh_keys.delete_key(current_principal(), ssh_key_id)
    return forms.back("keys.ssh_keys_page", "SSH key deleted.")


# Limits ------------------------------------------------------------------------------


def _limits_page(status: int = 200, fragment: str | None = None, **context):
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
@forms.rerender_on_error(_limits_page, "request")
def request_limit():
    requested = forms.integer("requested")
    if requested is None:
        raise InvalidRequest("How much do you need?", field="requested")
    quotas.request_increase(current_principal(), request.form.get("resource", ""), requested,
                            request.form.get("reason", ""))
    return forms.back("keys.limits_page", "Request sent; an administrator will decide on it.")
