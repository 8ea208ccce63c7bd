"""Public pages: the landing page and the API reference."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from appliance import __version__
from appliance.api.schema import openapi_document
from appliance.services import settings

bp = Blueprint("pages", __name__)


def site_context() -> dict:
    config = current_app.config["APPLIANCE"]
    try:
        site = settings.public_config(config)
    except Exception:  # the error page must render even when the database is down
        site = {"site_name": config["SITE_NAME"], "signup": config["SIGNUP"],
                "signup_open": config["SIGNUP"] == "open"}
    from appliance.web.session import csrf_token, current_principal

    return {"site": site, "version": __version__, "principal": current_principal(),
            "csrf_token": csrf_token, "url_endpoints": current_app.view_functions.keys()}


@bp.get("/")
def landing():
    return render_template("landing.html")


@bp.get("/docs/api")
def api_reference():
    return render_template("reference.html", doc=openapi_document(current_app))
