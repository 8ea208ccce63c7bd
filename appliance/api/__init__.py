"""JSON API under /api/v1: thin views (parse -> service -> serialize)."""

from flask import Flask

from appliance.api.schema import API_PREFIX


def init_app(app: Flask) -> None:
    from appliance.api import admin, auth, system

    app.register_blueprint(system.bp, url_prefix=API_PREFIX)
    app.register_blueprint(auth.bp, url_prefix=API_PREFIX)
    app.register_blueprint(admin.bp, url_prefix=API_PREFIX)
