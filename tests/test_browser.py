"""End to end in a real browser: Chromium driven by Playwright against `appliance serve`.

One server, one SMTP server (aiosmtpd) and one browser are shared by the module; each
test has its own browser context (cookies) and its own user. Screenshots of the main
pages land in the test output folder (see tests/browser.py) for a human to look at.
"""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from aiosmtpd.controller import Controller

from appliance.services.accounts.mfa import qr_svg
from tests.browser import (
    PASSWORD,
    ApplianceServer,
    Screenshots,
    fill_sign_in,
    link_in,
    running,
    submit,
)
from tests.conftest import free_port
from tests.factories import wait_for
from tests.smtp import Inbox

TOTP_STEP = 30

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smtp():
    """A plain SMTP server on 127.0.0.1 for the whole module: (inbox, port)."""
    mailbox, port = Inbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture(scope="module")
def inbox(smtp) -> Inbox:
    return smtp[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory, smtp):
    workdir = tmp_path_factory.mktemp("browser")
    appliance = ApplianceServer(workdir, {
        "APPLIANCE_DATA_DIR": str(workdir / "data"),
        "APPLIANCE_SMTP_HOST": "127.0.0.1",
        "APPLIANCE_SMTP_PORT": str(smtp[1]),
        "APPLIANCE_SMTP_SECURITY": "none",
        "APPLIANCE_SMTP_FROM": "Appliance <panel@example.org>",
    })
    yield from running(appliance)


def mail_to(inbox: Inbox, address: str, subject_start: str):
    """The newest mail to `address` whose subject starts with `subject_start`."""

    def find():
        found = [m for m in inbox.messages()
                 if m["To"] == address and m["Subject"].startswith(subject_start)]
        return found[-1] if found else None

    return wait_for(find, f"a mail {subject_start!r} to {address}")


def sign_out(page) -> None:
    submit(page, "Sign out", scope=page.locator("nav.nav"))
    assert re.search(r"/signin\?signed_out=1$", page.url)
    assert page.get_by_text("You are signed out.").is_visible()


def sign_up(page, server: ApplianceServer, name: str, email: str) -> None:
    page.goto(server.url + "/signup")
    page.get_by_label("Your name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    assert submit(page, "Create account") == 200
    assert page.url == server.url + "/signup/check-email"


def session_cookie(page) -> dict | None:
    found = [c for c in page.context.cookies() if c["name"] == "appliance_session"]
    return found[0] if found else None


def wait_for_next_totp_step(after_step: int) -> None:
    """Sleep until the TOTP step after `after_step` has begun (a code is accepted once, so
    the next sign-in needs a later step than the one that turned MFA on)."""
    remaining = (after_step + 1) * TOTP_STEP - time.time()
    if remaining > 0:
        time.sleep(remaining + 0.2)


def test_a_visitor_signs_up_confirms_the_address_and_signs_in(page, server, inbox):
    shots = Screenshots("signup")
    email = "ada@example.com"

    page.goto(server.url + "/")
    assert page.get_by_role("heading", level=1).is_visible()
    shots.take(page, "landing")

    page.get_by_role("link", name="Create an account").click()
    page.wait_for_url(server.url + "/signup")
    shots.take(page, "signup")
    page.get_by_label("Your name").fill("Ada Lovelace")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    assert submit(page, "Create account") == 200
    assert page.url == server.url + "/signup/check-email"
    assert page.locator("strong", has_text=email).is_visible()
    shots.take(page, "check-email")

    message = mail_to(inbox, email, "Confirm your email address")
    link = link_in(message.get_content(), "/verify-email?token=")
    assert link.startswith(server.url + "/verify-email?token=")  # from APPLIANCE_BASE_URL
    page.goto(link)
    assert page.get_by_role("heading", name="Confirm your email").is_visible()
    assert submit(page, "Confirm my email address") == 200
    assert page.get_by_role("heading", name="Email confirmed").is_visible()
    shots.take(page, "email-confirmed")

    page.get_by_role("link", name="Go to the dashboard").click()
    page.wait_for_url(server.url + "/dashboard")
    assert page.get_by_role("heading", name="Hello, Ada Lovelace").is_visible()
    assert page.get_by_text("Confirm your email address to create").count() == 0
    signup_cookie = session_cookie(page)

    sign_out(page)
    assert session_cookie(page) is None
    shots.take(page, "signin")

    assert fill_sign_in(page, email, "not my password") == 401
    assert page.get_by_role("alert").inner_text() == "The email address or password is wrong."
    assert page.get_by_label("Email").input_value() == email
    assert page.get_by_label("Password").input_value() == ""
    assert session_cookie(page) is None
    shots.take(page, "signin-wrong-password")

    assert fill_sign_in(page, email, PASSWORD) == 200
    assert page.url == server.url + "/dashboard"
    assert page.get_by_role("heading", name="Hello, Ada Lovelace").is_visible()
    assert page.get_by_text(f"Signed in as {email}").is_visible()
    shots.take(page, "dashboard")

    cookie = session_cookie(page)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["secure"] is False  # plain http on 127.0.0.1 (COOKIE_SECURE=auto)
    assert cookie["value"] != signup_cookie["value"]  # a new token at each sign-in
    assert "appliance_session" not in page.evaluate("document.cookie")  # HttpOnly at work


def turn_on_two_factor(page, email: str, shots: Screenshots) -> tuple[pyotp.TOTP, int, str,
                                                                      list[str]]:
    """On /account: scan (read) the key, confirm with a code from it, read the recovery
    codes. Returns (totp, the step of the confirming code, that code, recovery codes)."""
    mfa = page.locator("#mfa")
    assert submit(page, "Set up two-factor sign-in", scope=mfa) == 200
    secret = mfa.locator("code.secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    qr = mfa.locator(".qr svg")
    assert qr.is_visible()
    box = qr.bounding_box()
    assert box["width"] >= 150 and abs(box["width"] - box["height"]) < 1
    # The QR code holds this account's key: the same drawing as the otpauth URI an
    # authenticator app expects (label "issuer:email", the key, the issuer).
    uri = pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name="Appliance")
    expected = re.findall(r' d="([^"]+)"', qr_svg(uri))
    assert [p.get_attribute("d") for p in qr.locator("path").all()] == expected
    shots.take(page, "account-qr-code")

    totp = pyotp.TOTP(secret)
    confirm_time = time.time()
    confirm_code = totp.at(confirm_time)
    mfa.get_by_label("Code from the app").fill(confirm_code)
    assert submit(page, "Turn on", scope=mfa) == 200
    assert mfa.get_by_text("Two-factor sign-in is on.").is_visible()
    codes = [c.strip() for c in mfa.locator("ul.codes li code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", c) for c in codes)
    shots.take(page, "recovery-codes")
    return totp, int(confirm_time) // TOTP_STEP, confirm_code, codes


def enter_code(page, code: str) -> int:
    page.get_by_label("Code").fill(code)
    return submit(page, "Verify")


def test_two_factor_sign_in_with_a_recovery_code_and_then_an_app_code(page, server, inbox):
    shots = Screenshots("mfa")
    email = "grace@example.com"
    sign_up(page, server, "Grace Hopper", email)
    page.goto(server.url + "/account")
    totp, confirm_step, confirm_code, codes = turn_on_two_factor(page, email, shots)

    # Password first, then the code page; the code that turned MFA on is used up.
    sign_out(page)
    assert fill_sign_in(page, email, PASSWORD) == 200
    assert page.url == server.url + "/signin"
    assert page.get_by_role("heading", name="Two-factor sign-in").is_visible()
    assert session_cookie(page) is None
    shots.take(page, "mfa-prompt")
    assert enter_code(page, confirm_code) == 400
    assert page.locator(".error-text").inner_text() == "The code is not valid."
    assert session_cookie(page) is None
    shots.take(page, "mfa-code-refused")

    assert enter_code(page, codes[0].upper()) == 200  # case does not matter
    assert page.url == server.url + "/dashboard"
    assert page.get_by_role("heading", name="Hello, Grace Hopper").is_visible()
    assert session_cookie(page)["httpOnly"] is True
    page.goto(server.url + "/account")
    assert page.locator("#mfa").get_by_text("9 recovery code(s) left.").is_visible()

    # A fresh code from the app: a step after the one that turned MFA on.
    sign_out(page)
    wait_for_next_totp_step(confirm_step)
    assert fill_sign_in(page, email, PASSWORD) == 200
    assert enter_code(page, codes[0]) == 400  # a recovery code works once
    assert page.locator(".error-text").inner_text() == "The code is not valid."
    assert enter_code(page, totp.now()) == 200
    assert page.url == server.url + "/dashboard"
    assert page.get_by_role("heading", name="Hello, Grace Hopper").is_visible()
    shots.take(page, "dashboard-after-mfa")
