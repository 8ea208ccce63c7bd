"""Shared fixtures: a real app on a real SQLite file per test, built by the migrations."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from appliance import create_app
from appliance.services import clock
from appliance.services.accounts import api_keys, authcache
from appliance.services.limits import throttle
from appliance.services.ops import dashboard_metrics

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No APPLIANCE_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("APPLIANCE_"):
            monkeypatch.delenv(name)
    throttle.reset_all()
    api_keys.forget_pending_usage()
    dashboard_metrics.forget_pending()
    authcache.invalidate()
    yield
    clock.reset()
    throttle.reset_all()


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
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout} s")


class Server:
    """`appliance serve` in a subprocess on a free port, stopped at the end of the test."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
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
