"""Dashboard pages for projects: the list, one project with its members and keys.

Every rule (who may rename, add, remove, delete; the last owner; the default project)
is the service's: a view here parses the form, calls the one service function the JSON
API calls, and renders. A project the caller does not belong to is a 404 from the
service, rendered by the app's error handler. With htmx, the members card and the keys
card are swapped in place; without JavaScript every form posts and redirects.
"""

from __future__ import annotations

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, InvalidRequest
from appliance.models.projects import ROLES
from appliance.services import pagination, projects
from appliance.services.accounts import api_keys
from appliance.web.session import current_principal, login_required

bp = Blueprint("projects", __name__)

# Sent with a fragment that shows a form error at its real (4xx) status: base.html asks
# htmx to swap such a fragment in, as htmx leaves error answers unswapped by default.
ERROR_FRAGMENT_HEADER = "X-Error-Fragment"


def every_page(list_page, *args) -> list:
    """All rows of a paged service list (members of a project, keys of a project)."""
    rows, cursor = list_page(*args, pagination.MAX_LIMIT)
    while cursor:
        more, cursor = list_page(*args, pagination.MAX_LIMIT, cursor)
        rows += more
    return rows


def render_fragment_or_page(page: str, fragment: str | None, status: int = 200, **context):
    """The whole page, or the fragment htmx asked for (flagged when it shows an error)."""
    is_fragment = bool(fragment and request.headers.get("HX-Request"))
    response = make_response(render_template(fragment if is_fragment else page, **context),
                             status)
    if is_fragment and status >= 400:
        response.headers[ERROR_FRAGMENT_HEADER] = "1"
    return response


# The list ----------------------------------------------------------------------------


def _list_page(status: int = 200, **context):
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
def create():
    name = request.form.get("name", "")
    try:
        found = projects.create_project(current_principal(), name)
    except ApplianceError as exc:
        return _list_page(exc.status, error=exc, error_field=exc.details.get("field"),
                          form={"name": name})
    return redirect(url_for("projects.show", project_id=found.project.id,
                            notice="Project created. You are its owner."))


# One project -------------------------------------------------------------------------


def _project_page(project_id: str, status: int = 200, fragment: str | None = None,
                  **context):
    """The project page (or one of its cards); the service decides 404 and roles."""
    principal = current_principal()
    found = projects.access(principal, project_id)
    context.setdefault("form", {})
    context.setdefault("section", None)
    members = every_page(projects.list_members, principal, project_id)
    keys = (every_page(api_keys.list_project_keys, principal, project_id)
            if found.at_least(projects.MANAGE) else None)
    return render_fragment_or_page(
        "projects/show.html", fragment, status, access=found, project=found.project,
        members=members, project_keys=keys, roles=ROLES, key_status=api_keys.status_of,
        key_scopes=api_keys.scopes_of, **context)


def _failed(project_id: str, exc: ApplianceError, section: str,
            fragment: str | None = None, **context):
    return _project_page(project_id, exc.status, fragment, error=exc, section=section,
                         error_field=exc.details.get("field"), **context)


def _done(project_id: str, notice: str, fragment: str | None = None):
    """After a change: htmx gets the card again, a plain form post a redirect."""
    if fragment and request.headers.get("HX-Request"):
        return _project_page(project_id, fragment=fragment, notice=notice)
    return redirect(url_for("projects.show", project_id=project_id, notice=notice))


@bp.get("/projects/<project_id>")
@login_required
def show(project_id: str):
    return _project_page(project_id, notice=request.args.get("notice"))


@bp.post("/projects/<project_id>/rename")
@login_required
def rename(project_id: str):
    name = request.form.get("name", "")
    try:
        projects.rename_project(current_principal(), project_id, name)
    except ApplianceError as exc:
        return _failed(project_id, exc, "rename", form={"name": name})
    return _done(project_id, "Project renamed.")


@bp.post("/projects/<project_id>/delete")
@login_required
def delete(project_id: str):
    principal = current_principal()
    typed = " ".join(request.form.get("confirm_name", "").split())
    try:
        found = projects.access(principal, project_id)
        # The typed name only confirms the click; who may delete what is the service's.
        if typed != found.project.name:
            raise InvalidRequest("Type the project's name exactly to confirm.",
                                 field="confirm_name")
        projects.delete_project(principal, project_id)
    except ApplianceError as exc:
        return _failed(project_id, exc, "delete")
    return redirect(url_for("projects.index", notice=f"Project {found.project.name} deleted."))


@bp.post("/projects/<project_id>/members")
@login_required
def add_member(project_id: str):
    email = request.form.get("email", "")
    role = request.form.get("role", "member")
    try:
        member = projects.add_member(current_principal(), project_id, email, role)
    except ApplianceError as exc:
        return _failed(project_id, exc, "add-member", "projects/_members.html",
                       form={"email": email, "role": role})
    return _done(project_id, f"{member.user.email} added as {member.role}.",
                 "projects/_members.html")


@bp.post("/projects/<project_id>/members/<user_id>/role")
@login_required
def set_role(project_id: str, user_id: str):
    try:
        member = projects.set_member_role(current_principal(), project_id, user_id,
                                          request.form.get("role", ""))
    except ApplianceError as exc:
        return _failed(project_id, exc, "members", "projects/_members.html")
    return _done(project_id, f"{member.user.email} is now {member.role}.",
                 "projects/_members.html")


@bp.post("/projects/<project_id>/members/<user_id>/remove")
@login_required
def remove_member(project_id: str, user_id: str):
    try:
        projects.remove_member(current_principal(), project_id, user_id)
    except ApplianceError as exc:
        return _failed(project_id, exc, "members", "projects/_members.html")
    return _done(project_id, "Member removed.", "projects/_members.html")


@bp.post("/projects/<project_id>/leave")
@login_required
def leave(project_id: str):
    principal = current_principal()
    try:
        projects.remove_member(principal, project_id, principal.user.id)
    except ApplianceError as exc:
        return _failed(project_id, exc, "leave")
    return redirect(url_for("projects.index", notice="You left the project."))


@bp.post("/projects/<project_id>/keys/<key_id>/revoke")
@login_required
def revoke_key(project_id: str, key_id: str):
    try:
        api_keys.revoke_project_key(current_principal(), project_id, key_id)
    except ApplianceError as exc:
        return _failed(project_id, exc, "keys", "projects/_keys.html")
    return _done(project_id, "Key revoked.", "projects/_keys.html")
