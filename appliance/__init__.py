"""The appliance: a self-hosted control panel in one Python process."""

from __future__ import annotations

__version__ = "0.4.0"

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask
from flask.sessions import SessionInterface
from werkzeug.routing import Rule

PACKAGE_DIR = Path(__file__).resolve().parent


class LazyBuildRule(Rule):
    """A URL rule whose `url_for` builder is compiled on its first use.

    Werkzeug compiles two Python functions per rule when the rule is added (an AST each,
    about a millisecond); with three hundred routes that was a fifth of start-up, for
    builders most of which a process never calls. The first build compiles the real one
    and puts it in place; two threads racing compile the same function twice, harmlessly.
    """

    def _compile_builder(self, append_unknown: bool = True) -> Any:
        attribute = "_build_unknown" if append_unknown else "_build"

        def build(rule: Rule, *args: Any, **kwargs: Any) -> Any:
            real = Rule._compile_builder(rule, append_unknown).__get__(rule, None)
            setattr(rule, attribute, real)
            return real(*args, **kwargs)

        return build


class ApplianceFlask(Flask):
    """Flask, minus a per-call `inspect` that only async views need, with URL builders
    compiled on first use (`LazyBuildRule`).

    Flask passes every view and hook through `ensure_sync`, which asks `inspect` whether
    it is a coroutine function on every request. The appliance has no async views (a
    test checks), so functions are called as they are.
    """

    url_rule_class = LazyBuildRule

    def ensure_sync(self, func: Any) -> Any:
        return func


class _NoFlaskSession(SessionInterface):
    def open_session(self, app: Flask, request: Any) -> None:
        return None  # Flask then hands out an empty null session if anyone asks

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


def _asset_dir(name: str) -> Path:
    """templates/ and static/: inside the installed package, else at the source tree's top."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


def _offer_first_run_setup(app: Flask) -> None:
    """While no user exists, log a one-time link that unlocks the /setup page (the
    scheduler's `remind_setup_link` logs it again until it is used)."""
    # here like create_app's imports: `import appliance` stays light
    from appliance.db import database
    from appliance.services.accounts import setup_link

    with database.connection_context():
        token = setup_link.issue()
        if token is None:
            return
        app.extensions["setup_token"] = token
        setup_link.announce(token)


def create_app(overrides: Mapping[str, Any] | None = None, *, migrate: bool = True,
               offer_setup: bool = True) -> Flask:
    """Build the WSGI app: settings, data directory, secrets, database, migrations, routes.

    With `offer_setup` (the serving process) and no user yet, a one-time set-up token is
    made and its /setup link logged (kept as `extensions["setup_token"]` for the
    reminders); commands that do not serve (init, create-admin) pass False instead of
    replacing the link a running server printed.

    Raises `appliance.config.ConfigError` when a setting is malformed, and
    `appliance.db.MigrationFailed` when a migration fails (it names the copy of the
    database taken before the upgrade).
    """
    # Imported here, not at the top: `import appliance` (the version, the CLI's --help)
    # must not load Flask's blueprints, the services and the database drivers.
    from htmx_flask import Htmx

    from appliance import api, db, http, metrics, web
    from appliance.config import (
        activate,
        backup_dir,
        ensure_data_dir,
        ensure_secrets,
        load_settings,
    )
    from appliance.services import wiring

    sources: dict[str, str] = {}
    settings = load_settings(overrides, sources=sources)
    data_dir = ensure_data_dir(Path(settings["DATA_DIR"]))
    settings["DATA_DIR"] = str(data_dir)
    settings["BACKUP_DIR"] = str(backup_dir(settings))
    ensure_secrets(settings, data_dir)
    activate(settings, sources)

    app = ApplianceFlask(__name__, template_folder=str(_asset_dir("templates")),
                static_folder=str(_asset_dir("static")))
    # Flask's own cookie session is not used (dashboard sessions are rows, see
    # appliance.web.session), so it is switched off instead of signed on every request.
    app.session_interface = _NoFlaskSession()
    app.config.update(
        MAX_CONTENT_LENGTH=settings["MAX_BODY_BYTES"],
        APPLIANCE=settings,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False

    database = db.open_database(settings, data_dir)
    if db.database.obj is not None:
        db.release(db.database.obj)
    db.database.initialize(database)
    if migrate:
        # Before an upgrade's migrations, the database is copied to DATA_DIR/backups.
        db.migrate(database, backup_dir=data_dir / "backups")
    app.teardown_appcontext(db.close_connection)
    wiring.connect()

    if migrate and offer_setup:
        _offer_first_run_setup(app)
    Htmx(app)
    http.init_app(app)
    metrics.init_app(app)
    api.init_app(app)
    web.init_app(app)
    return app
