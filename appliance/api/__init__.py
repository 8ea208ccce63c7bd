"""JSON API under /api/v1: thin views (parse -> service -> serialize)."""

from flask import Flask

from appliance import http
from appliance.api import (
    account,
    admin,
    admin_instances,
    admin_overview,
    admin_settings,
    api_keys,
    auth,
    backups,
    billing,
    billing_admin,
    catalog,
    console,
    dashboard,
    event_stream,
    events,
    instances,
    invoices,
    metrics,
    notifications,
    principal,
    projects,
    system,
    templates,
    webhooks,
)
from appliance.api.schema import API_PREFIX, openapi_document


def init_app(app: Flask) -> None:
    http.add_hooks(app, after=principal.add_rate_headers)
    http.add_hooks(app, after=principal.count_api_request)

    app.extensions["openapi_document"] = lambda: openapi_document(app)  # the web's reference page
    app.register_blueprint(system.bp, url_prefix=API_PREFIX)
    app.register_blueprint(auth.bp, url_prefix=API_PREFIX)
    app.register_blueprint(admin.bp, url_prefix=API_PREFIX)
    app.register_blueprint(admin_instances.bp, url_prefix=API_PREFIX)
    app.register_blueprint(admin_overview.bp, url_prefix=API_PREFIX)
    app.register_blueprint(admin_settings.bp, url_prefix=API_PREFIX)
    app.register_blueprint(projects.bp, url_prefix=API_PREFIX)
    app.register_blueprint(api_keys.bp, url_prefix=API_PREFIX)
    app.register_blueprint(account.bp, url_prefix=API_PREFIX)
    app.register_blueprint(catalog.bp, url_prefix=API_PREFIX)
    app.register_blueprint(instances.bp, url_prefix=API_PREFIX)
    app.register_blueprint(invoices.bp, url_prefix=API_PREFIX)
    app.register_blueprint(backups.bp, url_prefix=API_PREFIX)
    app.register_blueprint(templates.bp, url_prefix=API_PREFIX)
    app.register_blueprint(billing.bp, url_prefix=API_PREFIX)
    app.register_blueprint(billing_admin.bp, url_prefix=API_PREFIX)
    app.register_blueprint(dashboard.bp, url_prefix=API_PREFIX)
    app.register_blueprint(metrics.bp, url_prefix=API_PREFIX)
    app.register_blueprint(event_stream.bp, url_prefix=API_PREFIX)
    app.register_blueprint(console.bp, url_prefix=API_PREFIX)
    app.register_blueprint(events.bp, url_prefix=API_PREFIX)
    app.register_blueprint(notifications.bp, url_prefix=API_PREFIX)
    app.register_blueprint(webhooks.bp, url_prefix=API_PREFIX)
