"""The htmx dashboard: thin views (parse -> service -> render).

A route renders the whole page, or only its fragment when htmx asks (`HX-Request`).
"""

from flask import Flask


def init_app(app: Flask) -> None:
    from appliance.web import pages

    app.register_blueprint(pages.bp)
    app.context_processor(pages.site_context)
