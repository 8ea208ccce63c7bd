"""Shared fixtures: a real app on a real SQLite file per test, built by the migrations.

- `reset_module_state()` runs before and after every test (autouse `clean_environment`):
  no cache or buffer of the appliance outlives the test that filled it.
- The standing people of the JSON API tests, each a fixture of bearer headers with a
  `*_user` twin holding the row: `owner`, `member` and `viewer` (members of the owner's
  default project, `owner_project`, in those roles), `outsider` (in no project of the
  owner's) and `admin` (an administrator, root@example.test).
- The standing people of the dashboard tests, each a signed-in `factories.Browser`:
  `ada` (the owner), `bob` (a teammate), `eve` (an outsider), all three made first by
  `users`, which a module overrides when it needs other people; and `root`, the
  administrator (the same account as `admin`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from appliance import create_app, db
from appliance.drivers import fake
from appliance.services import clock
from appliance.services.accounts import api_keys, authcache, sessions
from appliance.services.events import live
from appliance.services.instances import console, lifecycle
from appliance.services.limits import throttle
from appliance.services.ops import dashboard_metrics
from appliance.services.webhooks import endpoints
from appliance.web import reveal
from tests import pgsupport
from tests.factories import (
    Browser,
    add_member,
    default_project,
    fake_catalog,
    make_user,
    signed_in,
)

ROOT = Path(__file__).resolve().parent.parent


def reset_module_state() -> None:
    """Forget what the appliance keeps in process memory between requests.

    Each test has its own database, but these outlive it: the clock, rate-limit counters,
    the authorization cache, API-key uses and dashboard request counts not yet written,
    the fake engine's simulated nodes, the cached WEBHOOKS_ALLOW_PRIVATE setting, the
    rendered instance lists and the live event streams' slots. Kept on purpose: what
    `services.wiring.connect()` registers once (hooks, job handlers, quota counters), the
    settings of the last app built (a module-scoped app reads them) and the cached engine
    drivers (a module-scoped real-engine driver is shared; the fake one holds no state).
    """
    clock.reset()  # first: forgetting pending usage restarts its flush interval at now()
    throttle.reset_all()
    authcache.invalidate()
    sessions.forget_verified_tokens()
    api_keys.forget_pending_usage()
    dashboard_metrics.forget_pending()
    fake.forget_all()
    endpoints.forget_cached_setting()  # keyed by id(database): ids are reused
    lifecycle.forget_rendered_lists()  # kept under their listing version
    live.reset()  # slots of streams a test left open, and a past end_all()
    console.reset()  # web console sessions a test left open
    reveal.forget_all()  # one-time secrets kept for the page after a redirect


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No APPLIANCE_* variable of the developer's shell leaks into a test, and no module
    state of an earlier test either."""
    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            monkeypatch.delenv(name)
    url = None
    if pgsupport.ENABLED:  # a database of its own for the test (tests/pgsupport.py)
        url = pgsupport.new_database()
        monkeypatch.setenv("APPLIANCE_DATABASE_URL", url)
    reset_module_state()
    yield
    reset_module_state()
    if url is not None:
        if db.database.obj is not None:
            db.release(db.database.obj)
        pgsupport.drop(url)


def pytest_collection_modifyitems(config, items):
    """Tests for one database say so with a marker and are not run on the other, saying
    why: `sqlite_only` (about the SQLite file itself) in the PostgreSQL pass,
    `postgres_only` (several processes on one database) in the SQLite pass."""
    other, label = (("sqlite_only", "SQLite only") if pgsupport.ENABLED
                    else ("postgres_only", "PostgreSQL only, run by the PostgreSQL pass"))
    for item in items:
        marker = item.get_closest_marker(other)
        if marker is not None:
            reason = marker.args[0] if marker.args else ""
            item.add_marker(pytest.mark.skip(reason=f"{label}: {reason}"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def make_app(data_dir):
    """Build an app with the given settings on the test's data directory."""

    def make(**overrides):
        overrides.setdefault("DATA_DIR", str(data_dir))
        app = create_app(overrides)
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def catalog(app) -> dict[str, str]:
    """A healthy simulated node and the plans "small" and "large" (factories.fake_catalog)."""
    return fake_catalog(app)


# The standing people of the JSON API ------------------------------------------------


@pytest.fixture
def owner_user(app):
    return make_user(app, "owner@example.test")


@pytest.fixture
def owner(client, owner_user) -> dict[str, str]:
    return signed_in(client, owner_user.email)


@pytest.fixture
def owner_project(client, owner) -> str:
    """The id of the owner's default project, which `member` and `viewer` belong to."""
    return default_project(client, owner)


@pytest.fixture
def member_user(app, client, owner, owner_project):
    user = make_user(app, "member@example.test")
    add_member(client, owner, owner_project, user.email, "member")
    return user


@pytest.fixture
def member(client, member_user) -> dict[str, str]:
    return signed_in(client, member_user.email)


@pytest.fixture
def viewer_user(app, client, owner, owner_project):
    user = make_user(app, "viewer@example.test")
    add_member(client, owner, owner_project, user.email, "viewer")
    return user


@pytest.fixture
def viewer(client, viewer_user) -> dict[str, str]:
    return signed_in(client, viewer_user.email)


@pytest.fixture
def outsider_user(app):
    return make_user(app, "outsider@example.test")


@pytest.fixture
def outsider(client, outsider_user) -> dict[str, str]:
    return signed_in(client, outsider_user.email)


@pytest.fixture
def admin_user(app):
    return make_user(app, "root@example.test", role="admin", display_name="Root")


@pytest.fixture
def admin(client, admin_user) -> dict[str, str]:
    return signed_in(client, admin_user.email)


# The standing people of the dashboard -------------------------------------------------


@pytest.fixture
def users(app) -> dict:
    """Ada, Bob and Eve, all made before anyone signs in (override it in a module that
    needs other people: `ada`, `bob` and `eve` only sign in)."""
    return {name: make_user(app, f"{name}@example.test", display_name=name.title())
            for name in ("ada", "bob", "eve")}


@pytest.fixture
def ada(app, users) -> Browser:
    return Browser(app, "ada@example.test")


@pytest.fixture
def bob(app, users) -> Browser:
    return Browser(app, "bob@example.test")


@pytest.fixture
def eve(app, users) -> Browser:
    return Browser(app, "eve@example.test")


@pytest.fixture
def root(app, admin_user) -> Browser:
    return Browser(app, admin_user.email)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 20.0) -> requests.Response:
    """Poll `url` until it answers; fail early when the server process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            return requests.get(url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):
            # Listening, but not answering yet: start-up (the scheduler's first steps)
            # runs between binding the socket and serving it.
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout} s")


class Server:
    """`appliance serve` in a subprocess on a free port, stopped at the end of the test."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        if pgsupport.ENABLED and "APPLIANCE_DATABASE_URL" not in (env or {}):
            # The test's own database, or (a module-scoped server) one of its own.
            full_env["APPLIANCE_DATABASE_URL"] = (os.environ.get("APPLIANCE_DATABASE_URL")
                                                  or pgsupport.new_database())
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [*argv, "serve", "--port", str(self.port)], cwd=cwd, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(self) -> requests.Response:
        return wait_for_http(self.url + "/api/v1/health", self.process)

    def stop(self) -> str:
        self.process.terminate()
        try:
            output, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            output, _ = self.process.communicate()
        return output


@pytest.fixture
def serve(tmp_path):
    """Start `appliance serve` (from this environment) and stop it after the test."""
    servers: list[Server] = []

    def start(argv: list[str] | None = None, cwd: Path | None = None, **env: str) -> Server:
        server = Server(argv or [sys.executable, "-m", "appliance"], cwd or tmp_path, env)
        servers.append(server)
        server.wait()
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.stop()


@pytest.fixture(scope="module")
def chromium():
    """Debian's Chromium driven by Playwright (see tests/browser.py), one per module."""
    from tests.browser import launch_chromium, require_chromium

    sync_playwright = require_chromium()
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium):
    """A fresh browser tab; the test fails when the page logged an error."""
    from tests.browser import PageProblems, new_page

    tab = new_page(chromium)
    problems = PageProblems(tab)
    yield tab
    tab.context.close()
    assert problems.errors == []
