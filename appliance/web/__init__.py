"""The htmx dashboard: thin views (parse -> service -> render).

A route renders the whole page, or only its fragment when htmx asks (`HX-Request`).
Dashboard requests resolve the session cookie and check CSRF; the JSON API, static files
and /metrics skip both (the API authenticates with bearer tokens).

Every answer says `X-Content-Type-Options: nosniff` and sends the origin only as the
referrer to other sites; every answer outside the JSON API also refuses to be framed and
carries a strict Content-Security-Policy (`CONTENT_SECURITY_POLICY`): scripts and styles
only from our own files, so templates hold no inline `<script>`, no `on...=` handler, no
`style=` attribute and no `hx-on` (htmx's own indicator style is turned off in base.html;
page behaviour lives in static/js/app.js).
"""

from flask import Flask, Response, request

from appliance import http
from appliance.web import (
    account,
    admin,
    admin_instances,
    admin_overview,
    admin_settings,
    auth,
    backups,
    billing,
    billing_admin,
    catalog,
    instance_metrics,
    instances,
    invoices,
    keys,
    notifications,
    pages,
    projects,
    session,
    templates,
    webhooks,
)


def _is_dashboard_request() -> bool:
    path = request.path
    return not (path.startswith(("/api/", "/static/")) or path == "/metrics")


CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
))


def _before() -> None:
    if _is_dashboard_request():
        session.load_principal()
        session.check_csrf()


def _after(response: Response) -> Response:
    response = session.finish_response(response)
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    if not request.path.startswith("/api/"):
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    return response


def init_app(app: Flask) -> None:
    http.add_hooks(app, _before, _after)
    app.register_blueprint(pages.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(account.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(admin_instances.bp)
    app.register_blueprint(admin_overview.bp)
    app.register_blueprint(admin_settings.bp)
    app.register_blueprint(instance_metrics.bp)
    app.register_blueprint(projects.bp)
    app.register_blueprint(keys.bp)
    app.register_blueprint(instances.bp)
    app.register_blueprint(backups.bp)
    app.register_blueprint(templates.bp)
    app.register_blueprint(invoices.bp)
    app.register_blueprint(billing.bp)
    app.register_blueprint(billing_admin.bp)
    app.register_blueprint(catalog.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(notifications.bp)
    app.context_processor(pages.site_context)
    app.add_template_filter(pages.code_spans, "code_spans")
    app.add_template_filter(pages.linkify, "linkify")
