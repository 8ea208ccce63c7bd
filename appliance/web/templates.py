"""Dashboard page for a project's templates (made from backups on the instance page):
list, rename, delete with confirmation, and a link to create an instance from one.

The rules are the service's (services/instances/templates.py), called as the JSON API
calls them.
"""

from __future__ import annotations

from flask import Blueprint, request

from appliance.errors import ApplianceError
from appliance.services import projects
from appliance.services.instances import templates
from appliance.web import forms
from appliance.web.session import current_principal, login_required

bp = Blueprint("templates", __name__, url_prefix="/projects/<project_id>/templates")


def _page(project_id: str, status: int = 200, fragment: str | None = None,
          error: ApplianceError | None = None, **context):
    principal = current_principal()
    found = projects.access(principal, project_id)
    cursor = request.args.get("cursor") or None
    rows, next_cursor = templates.list_templates(principal, project_id, cursor=cursor)
    context.setdefault("form", {})
    return forms.render_fragment_or_page(
        "templates/index.html", None, status, access=found, project=found.project, rows=rows,
        cursor=cursor, next_cursor=next_cursor, error=error,
        notice=request.args.get("notice"), **context)


@bp.get("")
@login_required
def index(project_id: str):
    return _page(project_id)


@bp.post("/<template_id>/rename")
@login_required
@forms.rerender_on_error(_page, "rename-{template_id}")
def rename(project_id: str, template_id: str):
    templates.rename_template(current_principal(), project_id, template_id,
                              request.form.get("name", ""))
    return forms.back("templates.index", "Template renamed.", project_id=project_id)


@bp.post("/<template_id>/delete")
@login_required
@forms.rerender_on_error(_page, keep_form=False)
def delete(project_id: str, template_id: str):
    templates.delete_template(current_principal(), project_id, template_id)
    return forms.back("templates.index", "Template deleted.", project_id=project_id)
