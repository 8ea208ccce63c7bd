"""Run-time settings in the dashboard and over the API: stored in the database, in effect
at once, pinned by the environment, secrets never sent back, audited; the test mail
against a real SMTP server."""

from __future__ import annotations

import json
import re

import pytest

from appliance.models import AuditLog, Setting
from appliance.services.webhooks import endpoints
from tests.factories import PASSWORD, Browser, api, make_user, signed_in
from tests.smtp import SMTP_PASSWORD, SMTP_USER, SmtpServers, authenticate

WRONG = "not the password at all"


@pytest.fixture
def smtp_servers():
    servers = SmtpServers()
    yield servers
    servers.stop_all()


def _settings(client, admin) -> dict[str, dict]:
    response = api(client, "GET", "/admin/settings", admin)
    assert response.status_code == 200, response.get_json()
    return {row["name"]: row for row in response.get_json()["data"]}


def _signup(client, email: str):
    return client.post("/api/v1/auth/signup", json={"email": email, "password": PASSWORD})


def test_closing_signup_in_the_dashboard_refuses_signups_at_once(client, root):
    assert _signup(client, "early@example.test").status_code == 201
    saved = root.post("/admin/settings/site", {"site_name": "Club VPS", "support_email": "",
                                               "signup": "closed"})
    assert saved.status_code == 302
    assert saved.headers["Location"].startswith("/admin/settings?notice=Site")
    refused = _signup(client, "late@example.test")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "signup_disabled"
    assert client.get("/api/v1/config").get_json()["site_name"] == "Club VPS"
    root.post("/admin/settings/site", {"site_name": "Club VPS", "signup": "open"})
    assert _signup(client, "later@example.test").status_code == 201


def test_values_say_where_they_come_from_and_the_environment_pins_them(
        make_app, monkeypatch):
    monkeypatch.setenv("APPLIANCE_SMTP_HOST", "mail.example.test")
    app = make_app(EVENT_RETENTION_DAYS=30)
    client = app.test_client()
    make_user(app, "root@example.test", role="admin")
    admin = signed_in(client, "root@example.test")
    found = _settings(client, admin)
    assert found["smtp_host"] | {"help": ""} == {
        "name": "smtp_host", "group": "mail", "value": "mail.example.test", "is_set": True,
        "secret": False, "default": "", "source": "environment",
        "source_detail": "APPLIANCE_SMTP_HOST", "pinned": True, "kind": "text",
        "choices": [], "help": ""}
    assert found["event_retention_days"]["source"] == "overrides"
    assert found["signup"]["source"] == "default" and found["signup"]["choices"] == [
        "open", "closed", "invite"]
    refused = api(client, "PUT", "/admin/settings", admin, json={"smtp_host": "other.test"})
    assert refused.status_code == 409
    assert refused.get_json()["error"]["code"] == "setting_pinned"
    assert refused.get_json()["error"]["details"]["source"] == "APPLIANCE_SMTP_HOST"
    same = api(client, "PUT", "/admin/settings", admin, json={"smtp_host": "mail.example.test"})
    assert same.status_code == 200
    changed = api(client, "PUT", "/admin/settings", admin, json={"site_name": "Lab"})
    assert {row["name"]: row for row in changed.get_json()["data"]}["site_name"]["source"] == (
        "dashboard")
    reset = api(client, "PUT", "/admin/settings", admin, json={"site_name": None})
    assert {row["name"]: row for row in reset.get_json()["data"]}["site_name"] == (
        found["site_name"])
    html = Browser(app, "root@example.test").page("/admin/settings")
    assert "set by APPLIANCE_SMTP_HOST" in html
    assert 'name="smtp_host"' not in html  # read-only: no field to change it


def test_a_change_is_checked_audited_and_in_effect_without_a_restart(app, client, admin,
                                                                     admin_user):
    bad = api(client, "PUT", "/admin/settings", admin, json={"support_email": "not an email"})
    assert bad.status_code == 400
    assert bad.get_json()["error"]["details"]["field"] == "support_email"
    assert api(client, "PUT", "/admin/settings", admin, json={"smtp_from": 5}).status_code == 400
    with app.app_context():
        assert endpoints.allow_private() is False
    ok = api(client, "PUT", "/admin/settings", admin, json={
        "webhooks_allow_private": True, "support_email": "help@club.test",
        "session_idle_minutes": 30})
    assert ok.status_code == 200, ok.get_json()
    with app.app_context():
        assert endpoints.allow_private() is True
        row = AuditLog.get(AuditLog.action == "settings.changed")
    assert row.actor_id == admin_user.id
    assert json.loads(row.details)["settings"] == {
        "WEBHOOKS_ALLOW_PRIVATE": True, "SUPPORT_EMAIL": "help@club.test",
        "SESSION_IDLE_MINUTES": 30}
    assert client.get("/api/v1/config").get_json()["support_email"] == "help@club.test"
    unchanged = api(client, "PUT", "/admin/settings", admin, json={"session_idle_minutes": 30})
    assert unchanged.status_code == 200
    with app.app_context():
        assert AuditLog.select().where(AuditLog.action == "settings.changed").count() == 1


def test_the_support_email_shows_at_the_foot_of_every_page(client, root, admin):
    api(client, "PUT", "/admin/settings", admin, json={"support_email": "help@club.test"})
    assert 'href="mailto:help@club.test"' in client.get("/signin").get_data(as_text=True)


def _mail_settings(port: int, **extra) -> dict:
    return {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none",
            "smtp_from": "Club VPS <panel@club.test>", **extra}


def test_the_test_mail_reaches_a_real_smtp_server_and_reports_its_answer(
        client, admin, smtp_servers):
    inbox, port = smtp_servers.start()
    no_smtp = api(client, "POST", "/admin/settings/test-mail", admin, json={})
    assert no_smtp.status_code == 400
    assert no_smtp.get_json()["error"]["details"]["field"] == "smtp_host"
    assert api(client, "PUT", "/admin/settings", admin,
               json=_mail_settings(port)).status_code == 200
    response = api(client, "POST", "/admin/settings/test-mail", admin, json={})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["sent"] is True and body["to"] == "root@example.test"
    assert body["answer"] == "250 Message accepted for delivery"
    [received] = inbox.messages()
    assert received["To"] == "root@example.test"
    assert received["From"] == "Club VPS <panel@club.test>"
    assert received["Subject"] == "Test mail from the appliance"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_wrong_smtp_password_shows_the_servers_refusal_and_no_password_is_ever_shown(
        app, client, admin, root, smtp_servers):
    inbox, port = smtp_servers.start(auth_require_tls=False, auth_required=True,
                                     authenticator=authenticate)
    saved = root.post("/admin/settings/mail", {
        "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
        "smtp_user": SMTP_USER, "smtp_password": WRONG, "smtp_from": "panel@club.test"})
    assert saved.status_code == 302, saved.get_data(as_text=True)[:500]
    tried = root.post("/admin/settings/test-mail", {"to": "me@club.test"}, follow=True)
    page = tried.get_data(as_text=True)
    assert "was not sent: SMTP 535" in page
    assert inbox.received == []
    over_api = api(client, "POST", "/admin/settings/test-mail", admin, json={}).get_json()
    assert over_api["sent"] is False and over_api["answer"].startswith("SMTP 535")

    root.post("/admin/settings/mail", {
        "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
        "smtp_user": SMTP_USER, "smtp_password": SMTP_PASSWORD, "smtp_from": "panel@club.test"})
    good = api(client, "POST", "/admin/settings/test-mail", admin, json={}).get_json()
    assert good["sent"] is True and inbox.received[0]["auth"] == SMTP_USER
    # Saving the form again without typing a password keeps the stored one.
    root.post("/admin/settings/mail", {
        "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
        "smtp_user": SMTP_USER, "smtp_password": "", "smtp_from": "panel@club.test"})
    assert api(client, "POST", "/admin/settings/test-mail", admin,
               json={}).get_json()["sent"] is True

    seen = [
        api(client, "GET", "/admin/settings", admin).get_data(as_text=True),
        api(client, "GET", "/admin/audit-log?limit=100", admin).get_data(as_text=True),
        api(client, "GET", "/admin/mail-outbox", admin).get_data(as_text=True),
        root.page("/admin/settings"), root.page("/admin/audit"), root.page("/admin/mail"),
    ]
    for text in seen:
        assert SMTP_PASSWORD not in text and WRONG not in text
    settings = _settings(client, admin)["smtp_password"]
    assert settings["value"] is None and settings["is_set"] is True
    assert "Password (set)" in root.page("/admin/settings")
    with app.app_context():
        stored = Setting.get(Setting.key == "SMTP_PASSWORD").value
    assert SMTP_PASSWORD not in stored  # sealed at rest

    cleared = root.post("/admin/settings/mail", {
        "smtp_host": "127.0.0.1", "smtp_port": str(port), "smtp_security": "none",
        "smtp_user": SMTP_USER, "clear_smtp_password": "on", "smtp_from": "panel@club.test"})
    assert cleared.status_code == 302
    assert _settings(client, admin)["smtp_password"]["is_set"] is False


def test_a_bad_value_in_the_form_is_shown_next_to_its_field(root):
    response = root.post("/admin/settings/site", {"site_name": "Club", "signup": "open",
                                                  "support_email": "nope"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert re.search(r'id="e-f-site-support_email">SUPPORT_EMAIL: expected one email', page)
    assert 'value="nope"' in page  # what was typed stays


def test_non_admins_get_403_on_the_settings(client, owner, ada):
    for method, path, body in (("GET", "/admin/settings", None),
                               ("PUT", "/admin/settings", {"signup": "closed"}),
                               ("POST", "/admin/settings/test-mail", {})):
        response = api(client, method, path, owner, json=body)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "admin_only"
    assert ada.get("/admin/settings").status_code == 403
    assert ada.post("/admin/settings/site", {"signup": "closed"}).status_code == 403
    assert _signup(client, "still@example.test").status_code == 201
