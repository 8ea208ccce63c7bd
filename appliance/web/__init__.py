"""The htmx dashboard: thin views (parse -> service -> render).

A route renders the whole page, or only its fragment when htmx asks (`HX-Request`).
Dashboard requests resolve the session cookie and check CSRF; the JSON API, static files
and /metrics skip both (the API authenticates with bearer tokens).
"""

from flask import Flask, request

from appliance import http
from appliance.web import (
    account,
    admin,
    auth,
    backups,
    billing,
    billing_admin,
    catalog,
    instances,
    invoices,
    keys,
    notifications,
    pages,
    projects,
    session,
    webhooks,
)


def _is_dashboard_request() -> bool:
    path = request.path
    return not (path.startswith(("/api/", "/static/")) or path == "/metrics")


def _before() -> None:
    if _is_dashboard_request():
        session.load_principal()
        session.check_csrf()


def init_app(app: Flask) -> None:
    http.add_hooks(app, _before, session.finish_response)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(projects.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(instances.bp)
    app.register_blueprint(backups.bp)
    app.register_blueprint(invoices.bp)
    app.register_blueprint(billing.bp)
    app.register_blueprint(billing_admin.bp)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(notifications.bp)
    app.context_processor(pages.site_context)
