"""Public pages: the landing page and the API reference; and the template filters that
turn plain text into a little markup, always escaping it first (`code_spans`, `linkify`)."""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, current_app, render_template, request
from markupsafe import Markup, escape
from peewee import PeeweeException

from appliance import __version__
from appliance.services import branding, projects
from appliance.services.accounts import users
from appliance.web import forms
from appliance.web.session import csrf_token, current_principal

bp = Blueprint("pages", __name__)


def site_context() -> dict:
    config = current_app.config["APPLIANCE"]
    try:
        site = branding.public_config(config)
    except Exception:  # the error page must render even when the database is down
        site = {"site_name": config["SITE_NAME"], "support_email": config["SUPPORT_EMAIL"],
                "signup": config["SIGNUP"], "signup_open": config["SIGNUP"] == "open",
                "logo_url": None, "favicon_url": None, "theme_url": None, "footer_text": "",
                "support_url": ""}
    principal = current_principal()
    try:
        unconfirmed = principal is not None and users.verification_required(principal.user)
    except Exception:  # as above: the error page renders without the database
        unconfirmed = False
    return {"site": site, "version": __version__, "principal": principal,
            "email_unconfirmed": unconfirmed,
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


# Template filters: text in, escaped markup out (never `|safe` on what a user typed) ------

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
# http(s) URLs up to a space, quote or angle bracket, in text that is already escaped (so
# `&`, `<`, `>` and quotes are entities); a trailing full stop or bracket is not part of it.
_URL = re.compile(r"\bhttps?://[^\s<>\"']+?(?=[.,;:!?)\]]*(?:\s|&lt;|&gt;|&#34;|&#39;|$))")


def code_spans(text: str | None) -> Markup:
    """Markdown's `code` spans as <code>, for the API reference's descriptions: the text
    is escaped first, so only the backticks become markup."""
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", str(escape(text or ""))))  # noqa: S704 - escaped first


def linkify(text: str | None) -> Markup:
    """Plain text (a mail body) with its http(s) URLs as links: escaped first, then each
    URL wrapped in <a rel="noopener noreferrer">; nothing else becomes markup."""
    escaped = str(escape(text or ""))
    return Markup(_URL.sub(  # noqa: S704 - escaped first
        lambda m: f'<a href="{m.group(0)}" rel="noopener noreferrer">{m.group(0)}</a>',
        escaped))


# Branding: the uploaded images and the accent colour's stylesheet --------------------

_FOREVER = "public, max-age=31536000, immutable"


def _cached(response: Response, versioned: bool) -> Response:
    # The URL changes with the content (?v=): a versioned one can be kept for good.
    response.headers["Cache-Control"] = _FOREVER if versioned else "no-cache"
    return response


@bp.get("/branding/<any(logo, favicon):kind>")
def branding_image(kind: str):
    found = branding.image(kind)
    if found is None:
        abort(404)
    response = Response(found.data, mimetype=found.content_type)
    response.headers["Content-Disposition"] = f"inline; filename={kind}.{found.extension}"
    return _cached(response, request.args.get("v") == found.version)


@bp.get("/branding/theme.css")
def branding_theme():
    color = branding.current().accent_color or branding.DEFAULT_ACCENT
    response = Response(branding.theme_css(color), mimetype="text/css")
    return _cached(response, request.args.get("v") == color[1:])
