"""Public pages: the landing page and the API reference."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, request
from peewee import PeeweeException

from appliance import __version__
from appliance.services import projects, settings
from appliance.web import forms
from appliance.web.session import csrf_token, current_principal

bp = Blueprint("pages", __name__)


def site_context() -> dict:
    config = current_app.config["APPLIANCE"]
    try:
        site = settings.public_config(config)
    except Exception:  # the error page must render even when the database is down
        site = {"site_name": config["SITE_NAME"], "signup": config["SIGNUP"],
                "signup_open": config["SIGNUP"] == "open"}
    return {"site": site, "version": __version__, "principal": current_principal(),
            "csrf_token": csrf_token, "url_endpoints": current_app.view_functions.keys(),
            "project_switcher": project_switcher, "field_limits": forms.LIMITS}


def project_switcher() -> dict | None:
    """The top bar's project switcher: the signed-in user's projects and the current one.

    The current project is the one in the URL on a project's pages, else the default
    project (all_projects lists it first, as projects.default_project does). None when
    signed out, or when the database cannot answer (the error page still renders).
    """
    principal = current_principal()
    if principal is None:
        return None
    try:
        accesses = projects.all_projects(principal)
    except PeeweeException:
        return None
    wanted = (request.view_args or {}).get("project_id")
    current = next((a for a in accesses if a.project.id == wanted),
                   accesses[0] if accesses else None)
    return {"current": current, "projects": accesses}


@bp.get("/")
def landing():
    return render_template("landing.html")


@bp.get("/docs/api")
def api_reference():
    # The JSON API puts its document builder here (api/__init__.py): no import of api/.
    return render_template("reference.html", doc=current_app.extensions["openapi_document"]())
