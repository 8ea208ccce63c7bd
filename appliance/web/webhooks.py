"""Dashboard pages for webhooks (with their delivery log) and for events.

Every rule is the services' (services/webhooks/endpoints.py, services/webhooks/deliveries.py,
services/events/outbox.py): a view parses the form, calls the function the JSON API calls, and
renders. Every post redirects (a reload repeats nothing): a new or rotated secret, and a
test's outcome, are shown once by the page the redirect leads to (`reveal.keep` /
`reveal.take`, `Cache-Control: no-store`), never in a URL. Someone else's webhook is the
service's 404, rendered by the app's error handler.
"""

from __future__ import annotations

from collections import defaultdict

from flask import Blueprint, render_template, request

from appliance.errors import ApplianceError
from appliance.services import projects
from appliance.services.events import event_types, outbox, queries
from appliance.services.webhooks import deliveries, endpoints
from appliance.web import forms, reveal
from appliance.web.session import current_principal, login_required

bp = Blueprint("webhooks", __name__)

GRACE_CHOICES = ((0, "No grace: the old secret stops signing now"), (3600, "1 hour"),
                 (86400, "24 hours"), (604800, "7 days"))
STATUS_BADGE = {"active": "badge-ok", "paused": "badge-warn", "disabled": "badge-danger",
                "succeeded": "badge-ok", "pending": "badge-warn", "failed": "badge-danger"}


def type_groups() -> dict[str, list[tuple[str, str]]]:
    """Event types grouped by what they are about, for the checkboxes."""
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for name, kind in event_types.EVENT_TYPES.items():
        if name in endpoints.TARGETED_TYPES:
            continue
        groups[name.split(".", 1)[0]].append((name, kind.description))
    return dict(groups)


def _common(**context) -> dict:
    principal = current_principal()
    mine = projects.all_projects(principal)
    context.setdefault("form", {})
    context.setdefault("section", None)
    return {"my_projects": mine, "project_names": {a.project.id: a.project.name for a in mine},
            "badge": STATUS_BADGE, "types_of": endpoints.event_types_of, **context}


def _chosen_types() -> list[str] | None:
    if request.form.get("all_types"):
        return None
    return request.form.getlist("event_types")


# The list --------------------------------------------------------------------------


def _list_page(status: int = 200, fragment: str | None = None, **context):
    rows, next_cursor = endpoints.list_webhooks(current_principal(),
                                               cursor=request.args.get("cursor") or None)
    return render_template("webhooks/index.html", webhooks=rows, next_cursor=next_cursor,
                           groups=type_groups(), **_common(**context)), status


def _once(page, *args):
    """A GET that may show what a post kept for it (see reveal.py), never cached."""
    ticket = request.args.get(reveal.TICKET_ARG)
    kept = reveal.take(ticket) or {}
    body, status = page(*args, notice=request.args.get("notice"), already_shown=bool(ticket)
                        and not kept, **kept)
    return body, status, {"Cache-Control": "no-store"} if ticket else {}


@bp.get("/webhooks")
@login_required
def index():
    return _once(_list_page)


@bp.post("/webhooks")
@login_required
@forms.rerender_on_error(_list_page, "create")
def create():
    form = request.form
    created = endpoints.create_webhook(
        current_principal(), form.get("url", ""), event_types=_chosen_types(),
        project_id=form.get("project_id") or None, description=form.get("description", ""))
    return forms.back("webhooks.index", "Webhook created.",
                      **{reveal.TICKET_ARG: reveal.keep({"created": created})})


# One webhook -----------------------------------------------------------------------


def _show_page(webhook_id: str, status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    webhook = endpoints.get_webhook(principal, webhook_id)
    wanted = request.args.get("status") or None
    rows, next_cursor = deliveries.list_deliveries(
        principal, webhook_id, wanted if wanted in deliveries.STATUSES else None,
        cursor=request.args.get("cursor") or None)
    return render_template(
        "webhooks/show.html", webhook=webhook, deliveries=rows, next_cursor=next_cursor,
        attempts=deliveries.attempts_of([row.id for row in rows]), status_filter=wanted,
        groups=type_groups(), grace_choices=GRACE_CHOICES, **_common(**context)), status


def _back(webhook_id: str, notice: str | None, shown: dict | None = None):
    """Redirect to the webhook's page; `shown` is kept for it to show once."""
    extra = {reveal.TICKET_ARG: reveal.keep(shown)} if shown else {}
    return forms.back("webhooks.show", notice, webhook_id=webhook_id, **extra)


@bp.get("/webhooks/<webhook_id>")
@login_required
def show(webhook_id: str):
    return _once(_show_page, webhook_id)


@bp.post("/webhooks/<webhook_id>/edit")
@login_required
@forms.rerender_on_error(_show_page, "edit")
def edit(webhook_id: str):
    form = request.form
    types = _chosen_types()
    endpoints.update_webhook(current_principal(), webhook_id, url=form.get("url", ""),
                             description=form.get("description", ""),
                             event_types=[endpoints.ALL] if types is None else types)
    return _back(webhook_id, "Webhook saved.")


@bp.post("/webhooks/<webhook_id>/test")
@login_required
@forms.rerender_on_error(_show_page, "actions", keep_form=False)
def test(webhook_id: str):
    _, outcome = deliveries.send_test(current_principal(), webhook_id)
    return _back(webhook_id, None, {"tested": outcome})


@bp.post("/webhooks/<webhook_id>/pause")
@login_required
@forms.rerender_on_error(_show_page, "actions", keep_form=False)
def pause(webhook_id: str):
    endpoints.pause_webhook(current_principal(), webhook_id)
    return _back(webhook_id, "Webhook paused: new events are not sent to it.")


@bp.post("/webhooks/<webhook_id>/resume")
@login_required
@forms.rerender_on_error(_show_page, "actions", keep_form=False)
def resume(webhook_id: str):
    endpoints.resume_webhook(current_principal(), webhook_id)
    return _back(webhook_id, "Webhook active again.")


@bp.post("/webhooks/<webhook_id>/rotate")
@login_required
@forms.rerender_on_error(_show_page, "actions", keep_form=False)
def rotate(webhook_id: str):
    rotated = endpoints.rotate_secret(current_principal(), webhook_id,
                                      forms.integer("grace_seconds") or 0)
    return _back(webhook_id, "The webhook has a new secret.", {"created": rotated})


@bp.post("/webhooks/<webhook_id>/delete")
@login_required
@forms.rerender_on_error(_show_page, "actions", keep_form=False)
def delete(webhook_id: str):
    endpoints.delete_webhook(current_principal(), webhook_id)
    return forms.back("webhooks.index", "Webhook deleted.")


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver")
@login_required
@forms.rerender_on_error(_show_page, "deliveries", keep_form=False)
def redeliver(webhook_id: str, delivery_id: str):
    deliveries.redeliver(current_principal(), webhook_id, delivery_id)
    return _back(webhook_id, "Sent again: a new delivery with the same webhook-id.")


# Events ----------------------------------------------------------------------------


@bp.get("/events")
@login_required
def events_page():
    principal = current_principal()
    args = request.args
    chosen_type, chosen_project = args.get("type") or None, args.get("project_id") or None
    try:
        rows, next_cursor = queries.list_events(principal, chosen_type, chosen_project,
                                               cursor=args.get("cursor") or None)
        error = None
    except ApplianceError as exc:
        rows, next_cursor, error = [], None, exc
    return render_template(
        "events/index.html", events=rows, next_cursor=next_cursor, data_of=outbox.data_of,
        types=list(event_types.EVENT_TYPES), chosen_type=chosen_type,
        chosen_project=chosen_project, error=error, **_common()), 400 if error else 200
