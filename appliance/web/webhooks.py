"""Dashboard pages for webhooks (with their delivery log) and for events.

Every rule is the services' (services/webhooks/endpoints.py, services/webhooks/deliveries.py,
services/events/outbox.py): a view parses the form, calls the function the JSON API calls, and
renders. A new or rotated secret is rendered once, on the answer to the POST that made
it (`Cache-Control: no-store`), never in a URL. Someone else's webhook is the service's
404, rendered by the app's error handler.
"""

from __future__ import annotations

from collections import defaultdict

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import ApplianceError
from appliance.services import projects
from appliance.services.events import event_types, outbox, queries
from appliance.services.webhooks import deliveries, endpoints
from appliance.web.keys import form_int
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


def _list_page(status: int = 200, **context):
    rows, next_cursor = endpoints.list_webhooks(current_principal(),
                                               cursor=request.args.get("cursor") or None)
    return render_template("webhooks/index.html", webhooks=rows, next_cursor=next_cursor,
                           groups=type_groups(), **_common(**context)), status


@bp.get("/webhooks")
@login_required
def index():
    return _list_page(notice=request.args.get("notice"))


@bp.post("/webhooks")
@login_required
def create():
    form = request.form
    try:
        created = endpoints.create_webhook(
            current_principal(), form.get("url", ""), event_types=_chosen_types(),
            project_id=form.get("project_id") or None, description=form.get("description", ""))
    except ApplianceError as exc:
        return _list_page(exc.status, error=exc, error_field=exc.details.get("field"),
                          section="create", form=form)
    body, status = _list_page(created=created, notice="Webhook created.")
    return body, status, {"Cache-Control": "no-store"}


# One webhook -----------------------------------------------------------------------


def _show_page(webhook_id: str, status: int = 200, **context):
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


def _failed(webhook_id: str, exc: ApplianceError, section: str, **context):
    return _show_page(webhook_id, exc.status, error=exc, error_field=exc.details.get("field"),
                      section=section, **context)


def _back(webhook_id: str, notice: str):
    return redirect(url_for("webhooks.show", webhook_id=webhook_id, notice=notice))


@bp.get("/webhooks/<webhook_id>")
@login_required
def show(webhook_id: str):
    return _show_page(webhook_id, notice=request.args.get("notice"))


@bp.post("/webhooks/<webhook_id>/edit")
@login_required
def edit(webhook_id: str):
    form = request.form
    types = _chosen_types()
    try:
        endpoints.update_webhook(current_principal(), webhook_id, url=form.get("url", ""),
                                description=form.get("description", ""),
                                event_types=[endpoints.ALL] if types is None else types)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "edit", form=form)
    return _back(webhook_id, "Webhook saved.")


@bp.post("/webhooks/<webhook_id>/test")
@login_required
def test(webhook_id: str):
    try:
        _, outcome = deliveries.send_test(current_principal(), webhook_id)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "actions")
    return _show_page(webhook_id, tested=outcome)


@bp.post("/webhooks/<webhook_id>/pause")
@login_required
def pause(webhook_id: str):
    try:
        endpoints.pause_webhook(current_principal(), webhook_id)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "actions")
    return _back(webhook_id, "Webhook paused: new events are not sent to it.")


@bp.post("/webhooks/<webhook_id>/resume")
@login_required
def resume(webhook_id: str):
    try:
        endpoints.resume_webhook(current_principal(), webhook_id)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "actions")
    return _back(webhook_id, "Webhook active again.")


@bp.post("/webhooks/<webhook_id>/rotate")
@login_required
def rotate(webhook_id: str):
    try:
        rotated = endpoints.rotate_secret(current_principal(), webhook_id,
                                         form_int("grace_seconds") or 0)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "actions")
    body, status = _show_page(webhook_id, created=rotated,
                              notice="The webhook has a new secret.")
    return body, status, {"Cache-Control": "no-store"}


@bp.post("/webhooks/<webhook_id>/delete")
@login_required
def delete(webhook_id: str):
    try:
        endpoints.delete_webhook(current_principal(), webhook_id)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "actions")
    return redirect(url_for("webhooks.index", notice="Webhook deleted."))


@bp.post("/webhooks/<webhook_id>/deliveries/<delivery_id>/redeliver")
@login_required
def redeliver(webhook_id: str, delivery_id: str):
    try:
        deliveries.redeliver(current_principal(), webhook_id, delivery_id)
    except ApplianceError as exc:
        return _failed(webhook_id, exc, "deliveries")
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
