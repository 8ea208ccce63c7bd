"""Helpers for end-to-end tests that drive Debian's Chromium with Playwright.

- `require_chromium()` is the one place that decides whether a browser test runs: with
  `CI=true` a missing Chromium or Playwright fails the test (CI must never go green by
  skipping); elsewhere the test is skipped with the reason and the fix.
- `launch_chromium(playwright)` starts `/usr/bin/chromium` headless with the flags known
  to work on this machine kind (no `playwright install`: Playwright drives the system
  browser).
- `ApplianceServer` is `appliance serve` in a subprocess whose port is chosen before it
  starts, so `APPLIANCE_BASE_URL` (the links in mails) can name it; its output goes to a
  log file, not a pipe nobody reads.
- `Screenshots` saves full-page PNGs under the test run's output folder:
  `$APPLIANCE_TEST_OUTPUT/screenshots`, or `<repo>/build/test-output/screenshots`.
- `served_with_an_admin(workdir)` is the body of a module's `server` fixture: the
  administrator ADMIN_EMAIL (password PASSWORD) made from the shell, then the server;
  `sign_in(page, server)` signs them in, `submit` clicks a button and waits for the page.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests may run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "lantern orchard velvet 42"  # every account the browser tests make has it
ADMIN_EMAIL = "ada@example.com"  # the administrator made from the shell
ADMIN_NAME = "Ada Lovelace"
PHONE = {"width": 390, "height": 844}
SMALL_PHONE = {"width": 375, "height": 812}
LAUNCH_TIMEOUT_MS = 60_000
ACTION_TIMEOUT_MS = 15_000
NAVIGATION_TIMEOUT_MS = 30_000

# Read at import: the autouse `clean_environment` fixture removes every APPLIANCE_*
# variable while a test runs, and this one is for the test harness, not the app.
_OUTPUT_ROOT = os.environ.get("APPLIANCE_TEST_OUTPUT") or str(ROOT / "build" / "test-output")


def require_chromium() -> Callable[[], Any]:
    """Return Playwright's `sync_playwright`, or skip (locally) / fail (CI=true).

    Call it first in a browser fixture. Under CI the browser tests are part of the
    contract, so a missing browser or package is a failure, never a skip.
    """
    problems = []
    if not os.access(CHROMIUM, os.X_OK):
        problems.append(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_playwright = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problems.append("the playwright package is missing (.venv-test/bin/pip install "
                        "playwright; `playwright install` is not needed)")
    if problems:
        reason = "browser tests need Chromium and Playwright: " + "; ".join(problems)
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} - CI=true, so this fails instead of skipping",
                        pytrace=False)
        pytest.skip(reason)
    return sync_playwright


def launch_chromium(playwright: Any) -> Any:
    """Start headless Chromium from the system package; the caller closes it."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                      headless=True, timeout=LAUNCH_TIMEOUT_MS)


def new_page(browser: Any) -> Any:
    """A page in a fresh context (own cookies) with bounded default timeouts."""
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    return context.new_page()


class PageProblems:
    """Collects what a user would see break: uncaught script errors, failed assets and
    anything the Content-Security-Policy refused (Chromium logs "Refused to ...").

    `console` keeps every console message as "type: text", for a test to look at.
    """

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.console: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"script error: {exc}"))
        page.on("console", self._console)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        text = f"{message.type}: {message.text}"
        self.console.append(text)
        if "Content Security Policy" in message.text or message.text.startswith("Refused to"):
            self.errors.append(f"CSP violation: {message.text} ({page_url(message)})")

    def _failed(self, request: Any) -> None:
        # ERR_ABORTED is the browser dropping a load because the page navigated away
        # (a form submitted while the logo was still loading), not a broken asset.
        if "ERR_ABORTED" not in (request.failure or ""):
            self.errors.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        # Documents may answer 4xx on purpose (a wrong password is a 401 page), and so may
        # htmx requests whose answer is a form's error, flagged X-Error-Fragment
        # (appliance/web/forms.py); stylesheets, scripts and images never should.
        intended = (response.request.resource_type == "document"
                    or response.headers.get("x-error-fragment"))
        if not intended and response.status >= 400:
            self.errors.append(f"{response.status} for {response.url}")


def page_url(message: Any) -> str:
    """Where a console message came from: its script's URL, or the page's."""
    location = message.location or {}
    return location.get("url") or ""


class Screenshots:
    """Full-page PNGs named `<prefix>-NN-<name>.png`, numbered in the order taken."""

    def __init__(self, prefix: str) -> None:
        self.folder = Path(_OUTPUT_ROOT) / "screenshots"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.count = 0
        for old in self.folder.glob(f"{prefix}-*.png"):  # no stale pages from older runs
            old.unlink()

    def take(self, page: Any, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.prefix}-{self.count:02d}-{name}.png"
        # From the top: an autofocused field scrolls the page, and a full-page capture
        # of a scrolled page draws the sticky top bar in the middle of it.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=True)
        return path


class ApplianceServer(Server):
    """`python -m appliance serve` on a free port with `APPLIANCE_BASE_URL` set to it.

    Shares `wait()` with `tests.conftest.Server`; `stop()` returns the server's log.
    """

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cwd / "server.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        full_env.update(env)
        full_env["APPLIANCE_BASE_URL"] = self.url
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "appliance", "serve", "--port", str(self.port)],
                cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log_path.read_text()


def link_in(text: str, path: str) -> str:
    """The first absolute URL in a mail body whose path is `path`."""
    match = re.search(rf"https?://\S+{re.escape(path)}\S*", text)
    assert match, f"no {path} link in:\n{text}"
    return match.group(0)


def running(appliance: ApplianceServer):
    """Yield a started `appliance`; stop it afterwards and fail on a traceback in its log.

    The body of a module-scoped `server` fixture: `yield from running(ApplianceServer(...))`.
    """
    try:
        appliance.wait()
    except AssertionError:
        print(appliance.stop())
        raise
    yield appliance
    log = appliance.stop()
    assert "Traceback" not in log, log


def create_admin_from_shell(workdir: Path, data: Path, email: str, name: str,
                            password: str) -> None:
    """An administrator made with `appliance create-admin`, as an operator would."""
    subprocess.run([sys.executable, "-m", "appliance", "create-admin", "--email", email,
                    "--name", name, "--data-dir", str(data)],
                   env={"APPLIANCE_ADMIN_PASSWORD": password, "PATH": ""}, check=True,
                   capture_output=True, cwd=workdir)


def served_with_an_admin(workdir: Path, seed: Callable[[Path], None] | None = None):
    """The body of a module-scoped `server` fixture: the administrator made from the
    shell, as an operator would on first install, then `seed(data directory)` if given,
    then the server: `yield from served_with_an_admin(tmp_path_factory.mktemp(...))`."""
    data = workdir / "data"
    create_admin_from_shell(workdir, data, ADMIN_EMAIL, ADMIN_NAME, PASSWORD)
    if seed is not None:
        seed(data)
    yield from running(ApplianceServer(workdir, {"APPLIANCE_DATA_DIR": str(data)}))


def submit(page: Any, button_name: str, *, scope: Any = None) -> int:
    """Click a submit button and wait for the page it leads to; return its HTTP status."""
    with page.expect_navigation() as navigation:
        (scope or page).get_by_role("button", name=button_name, exact=True).click()
    return navigation.value.status


def fill_sign_in(page: Any, email: str, password: str = PASSWORD) -> int:
    """Fill and send the sign-in form the page shows; return the status of the answer."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    return submit(page, "Sign in")


def sign_in(page: Any, server: ApplianceServer, email: str = ADMIN_EMAIL,
            password: str = PASSWORD) -> None:
    """Open /signin and sign in (the administrator by default)."""
    page.goto(server.url + "/signin")
    assert fill_sign_in(page, email, password) == 200


def nav_link(page: Any, name: str) -> Any:
    """A link of the main navigation, by its exact name."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name,
                                                                    exact=True)


def fits_the_screen(page: Any) -> bool:
    """Nothing on the page is wider than its viewport (no sideways scrolling)."""
    return page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
