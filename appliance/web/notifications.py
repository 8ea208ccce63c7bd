"""Dashboard notifications: the bell in the header, the notifications page, marking read.

The bell is rendered with every signed-in page (its unread count) and refreshes itself
when static/js/live.js, which follows GET /api/v1/events/stream, says an event arrived;
without JavaScript it is a plain link showing the count of the page load. The rules are
services/events/notifications.py's, called as the JSON API calls them.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.services.events import event_types, notifications
from appliance.web import forms
from appliance.web.session import current_principal, login_required

bp = Blueprint("notifications", __name__)


@bp.app_context_processor
def _bell() -> dict:
    def unread_notifications() -> int:
        principal = current_principal()
        return notifications.unread_count(principal) if principal is not None else 0

    return {"unread_notifications": unread_notifications,
            "live_event_types": " ".join(event_types.EVENT_TYPES)}


@bp.get("/notifications")
@login_required
def index():
    principal = current_principal()
    unread = request.args.get("unread") == "1"
    rows, next_cursor = notifications.list_notifications(
        principal, unread, cursor=request.args.get("cursor") or None)
    return forms.render_fragment_or_page(
        "notifications/index.html", "notifications/_list.html", rows=rows,
        next_cursor=next_cursor, unread=unread, unread_count=notifications.unread_count(principal))


@bp.get("/notifications/bell")
@login_required
def bell():
    return render_template("notifications/_bell.html")


def _back():
    if request.headers.get("HX-Request"):
        response = index()
        response.headers["HX-Trigger"] = "notifications-changed"  # the bell follows
        return response
    return redirect(url_for("notifications.index", unread="1" if request.form.get("unread")
                            else None))


@bp.post("/notifications/<notification_id>/read")
@login_required
def read(notification_id: str):
    notifications.mark_read(current_principal(), notification_id)
    return _back()


@bp.post("/notifications/read-all")
@login_required
def read_all():
    notifications.mark_all_read(current_principal())
    return _back()
