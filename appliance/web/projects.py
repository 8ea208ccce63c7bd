"""Dashboard pages for projects: the list, one project with its members and keys.

Every rule (who may rename, add, remove, delete; the last owner; the default project)
is the service's: a view here parses the form, calls the one service function the JSON
API calls, and renders. A project the caller does not belong to is a 404 from the
service, rendered by the app's error handler. With htmx, the members card and the keys
card are swapped in place; without JavaScript every form posts and redirects.
"""

from __future__ import annotations

from flask import Blueprint, render_template, request

from appliance.errors import InvalidRequest
from appliance.models.projects import ROLES
from appliance.services import projects
from appliance.services.accounts import api_keys
from appliance.web import forms
from appliance.web.session import current_principal, login_required

bp = Blueprint("projects", __name__)

# The list ----------------------------------------------------------------------------


def _list_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    accesses = projects.all_projects(principal)
    counts = {found.project.id: projects.member_count(found.project.id) for found in accesses}
    context.setdefault("form", {})
    return render_template("projects/index.html", accesses=accesses, counts=counts,
                           **context), status


@bp.get("/projects")
@login_required
def index():
    return _list_page(notice=request.args.get("notice"))


@bp.post("/projects")
@login_required
@forms.rerender_on_error(_list_page)
def create():
    found = projects.create_project(current_principal(), request.form.get("name", ""))
    return forms.back("projects.show", "Project created. You are its owner.",
                      project_id=found.project.id)


# One project -------------------------------------------------------------------------


def _project_page(project_id: str, status: int = 200, fragment: str | None = None,
                  **context):
    """The project page (or one of its cards); the service decides 404 and roles."""
    principal = current_principal()
    found = projects.access(principal, project_id)
    context.setdefault("form", {})
    context.setdefault("section", None)
    members = forms.every_page(projects.list_members, principal, project_id)
    keys = (forms.every_page(api_keys.list_project_keys, principal, project_id)
            if found.at_least(projects.MANAGE) else None)
    return forms.render_fragment_or_page(
        "projects/show.html", fragment, status, access=found, project=found.project,
        members=members, project_keys=keys, roles=ROLES, key_status=api_keys.status_of,
        key_scopes=api_keys.scopes_of, **context)


def _done(project_id: str, notice: str, fragment: str | None = None):
    return forms.done(_project_page, notice, "projects.show", fragment, project_id=project_id)


@bp.get("/projects/<project_id>")
@login_required
def show(project_id: str):
    return _project_page(project_id, notice=request.args.get("notice"))


@bp.post("/projects/<project_id>/rename")
@login_required
@forms.rerender_on_error(_project_page, "rename")
def rename(project_id: str):
    projects.rename_project(current_principal(), project_id, request.form.get("name", ""))
    return _done(project_id, "Project renamed.")


@bp.post("/projects/<project_id>/delete")
@login_required
@forms.rerender_on_error(_project_page, "delete")
def delete(project_id: str):
    principal = current_principal()
    typed = " ".join(request.form.get("confirm_name", "").split())
    found = projects.access(principal, project_id)
    # The typed name only confirms the click; who may delete what is the service's.
    if typed != found.project.name:
        raise InvalidRequest("Type the project's name exactly to confirm.",
                             field="confirm_name")
    projects.delete_project(principal, project_id)
    return forms.back("projects.index", f"Project {found.project.name} deleted.")


MEMBERS, KEYS = "projects/_members.html", "projects/_keys.html"


@bp.post("/projects/<project_id>/members")
@login_required
@forms.rerender_on_error(_project_page, "add-member", MEMBERS)
def add_member(project_id: str):
    member = projects.add_member(current_principal(), project_id,
                                 request.form.get("email", ""),
                                 request.form.get("role", "member"))
    return _done(project_id, f"{member.user.email} added as {member.role}.", MEMBERS)


@bp.post("/projects/<project_id>/members/<user_id>/role")
@login_required
@forms.rerender_on_error(_project_page, "members", MEMBERS)
def set_role(project_id: str, user_id: str):
    member = projects.set_member_role(current_principal(), project_id, user_id,
                                      request.form.get("role", ""))
    return _done(project_id, f"{member.user.email} is now {member.role}.", MEMBERS)


@bp.post("/projects/<project_id>/members/<user_id>/remove")
@login_required
@forms.rerender_on_error(_project_page, "members", MEMBERS)
def remove_member(project_id: str, user_id: str):
    projects.remove_member(current_principal(), project_id, user_id)
    return _done(project_id, "Member removed.", MEMBERS)


@bp.post("/projects/<project_id>/leave")
@login_required
@forms.rerender_on_error(_project_page, "leave")
def leave(project_id: str):
    principal = current_principal()
    projects.remove_member(principal, project_id, principal.user.id)
    return forms.back("projects.index", "You left the project.")


@bp.post("/projects/<project_id>/keys/<key_id>/revoke")
@login_required
@forms.rerender_on_error(_project_page, "keys", KEYS)
def revoke_key(project_id: str, key_id: str):
    api_keys.revoke_project_key(current_principal(), project_id, key_id)
    return _done(project_id, "Key revoked.", KEYS)
