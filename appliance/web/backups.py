"""Dashboard page for a project's backups (the final backups deletes kept): list, delete.

The rules are the service's (services/instances/backups.py), called as the JSON API calls them.
"""

from __future__ import annotations

from flask import Blueprint, redirect, request, url_for

from appliance.errors import ApplianceError
from appliance.services import projects
from appliance.services.instances import backups
from appliance.web.projects import render_fragment_or_page
from appliance.web.session import current_principal, login_required

bp = Blueprint("backups", __name__, url_prefix="/projects/<project_id>/backups")


def _page(project_id: str, status: int = 200, error: ApplianceError | None = None):
    principal = current_principal()
    found = projects.access(principal, project_id)
    cursor = request.args.get("cursor") or None
    rows, next_cursor = backups.list_backups(principal, project_id, cursor=cursor)
    return render_fragment_or_page(
        "backups/index.html", None, status, access=found, project=found.project, rows=rows,
        cursor=cursor, next_cursor=next_cursor, error=error,
        notice=request.args.get("notice"))


@bp.get("")
@login_required
def index(project_id: str):
    return _page(project_id)


@bp.post("/<backup_id>/delete")
@login_required
def delete(project_id: str, backup_id: str):
    try:
        backups.delete_backup(current_principal(), project_id, backup_id)
    except ApplianceError as exc:
        return _page(project_id, exc.status, error=exc)
    return redirect(url_for("backups.index", project_id=project_id, notice="Backup deleted."))
