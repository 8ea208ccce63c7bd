"""Dashboard page for a project's backups (those of deleted instances too, such as the
final backups deletes kept): list (all, or one kind), delete, and a link to create an
instance from one.

The rules are the service's (services/instances/backups.py), called as the JSON API calls them.
"""

from __future__ import annotations

from flask import Blueprint, request

from appliance.errors import ApplianceError
from appliance.services import projects
from appliance.services.instances import backups
from appliance.web import forms
from appliance.web.session import current_principal, login_required

bp = Blueprint("backups", __name__, url_prefix="/projects/<project_id>/backups")


def _page(project_id: str, status: int = 200, fragment: str | None = None,
          error: ApplianceError | None = None, **context):
    principal = current_principal()
    found = projects.access(principal, project_id)
    cursor = request.args.get("cursor") or None
    kind = request.args.get("kind") if request.args.get("kind") in backups.KINDS else None
    rows, next_cursor = backups.list_backups(principal, project_id, cursor=cursor, kind=kind)
    return forms.render_fragment_or_page(
        "backups/index.html", None, status, access=found, project=found.project, rows=rows,
        cursor=cursor, next_cursor=next_cursor, error=error, kind=kind, kinds=backups.KINDS,
        usable=backups.USABLE, notice=request.args.get("notice"))


@bp.get("")
@login_required
def index(project_id: str):
    return _page(project_id)


@bp.post("/<backup_id>/delete")
@login_required
@forms.rerender_on_error(_page, keep_form=False)
def delete(project_id: str, backup_id: str):
    backups.delete_backup(current_principal(), project_id, backup_id)
    return forms.back("backups.index", "Backup deleted.", project_id=project_id)
