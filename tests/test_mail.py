"""Mail delivery against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import MailOutbox
from appliance.services import clock
from appliance.services.accounts import mail
from tests.conftest import free_port
from tests.smtp import SMTP_PASSWORD, SMTP_USER, Inbox, SmtpServers, authenticate


@pytest.fixture
def smtp_servers():
    servers = SmtpServers()
    yield servers
    servers.stop_all()


@pytest.fixture
def smtp(smtp_servers) -> tuple[Inbox, int]:
    """A plain SMTP server on a free port: (inbox, port)."""
    return smtp_servers.start()


def smtp_settings(port: int, **extra) -> dict:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_SECURITY": "none",
            "SMTP_FROM": "Appliance <panel@example.org>", **extra}


def test_it_delivers_mail_through_the_configured_smtp_server(make_app, smtp):
    inbox, port = smtp
    app = make_app(**smtp_settings(port))
    with app.app_context():
        row = mail.send("ada@example.com", "Réinitialisation du mot de passe",
                        "Open https://panel.example.org/reset?token=tok_123\n")
        stored = MailOutbox.get_by_id(row.id)

    assert row.id.startswith("mail_")
    assert (stored.status, stored.attempts, stored.error) == ("sent", 1, None)
    assert stored.sent_at is not None
    [received] = inbox.received
    assert received["mail_from"] == "panel@example.org"
    assert received["rcpt_tos"] == ["ada@example.com"]
    message = received["message"]
    assert message["From"] == "Appliance <panel@example.org>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Réinitialisation du mot de passe"
    assert message.get_content().splitlines() == [
        "Open https://panel.example.org/reset?token=tok_123"]
    assert message["Message-ID"] == f"<{row.id}@example.org>"
    assert message["Date"].datetime == stored.created_at.replace(microsecond=0)


def test_it_keeps_mail_in_the_outbox_without_smtp(make_app, smtp, caplog):
    inbox, _port = smtp  # listening, but the app is not told about it
    app = make_app()
    caplog.set_level(logging.INFO, logger="appliance.services.accounts.mail")
    with app.app_context():
        row = mail.send("bob@example.com", "Confirm your address",
                        "Your code is tok_secret_verification_code")
        stored = MailOutbox.get_by_id(row.id)

    assert (stored.status, stored.attempts, stored.sent_at) == ("held", 0, None)
    assert stored.body == "Your code is tok_secret_verification_code"
    assert inbox.received == []
    lines = [record.getMessage() for record in caplog.records
             if record.name == "appliance.services.accounts.mail"]
    assert len(lines) == 1
    assert "bob@example.com" in lines[0]
    assert "Confirm your address" in lines[0]
    assert "outbox" in lines[0]
    assert "tok_secret" not in caplog.text


def test_it_keeps_a_failed_mail_when_the_server_is_unreachable(make_app, caplog):
    port = free_port()  # nothing listens here
    app = make_app(**smtp_settings(port))
    caplog.set_level(logging.INFO, logger="appliance.services.accounts.mail")
    with app.app_context():
        row = mail.send("carol@example.com", "Invoice", "Your invoice tok_invoice_link")

    assert row.status == "failed"
    assert row.attempts == 1
    assert row.sent_at is None
    assert f"127.0.0.1:{port}" in row.error
    assert "Traceback" not in row.error
    warnings = [r for r in caplog.records
                if r.levelno == logging.WARNING and r.name == "appliance.services.accounts.mail"]
    assert len(warnings) == 1
    assert "carol@example.com" in warnings[0].getMessage()
    assert "tok_invoice_link" not in caplog.text


def test_it_delivers_failed_mail_once_a_server_listens(make_app, smtp_servers):
    port = free_port()
    app = make_app(**smtp_settings(port))
    with app.app_context():
        row = mail.send("dan@example.com", "Welcome", "Hello Dan")
        assert row.status == "failed"

        inbox, _ = smtp_servers.start(port=port)
        assert mail.retry_failed() == 1
        assert mail.retry_failed() == 0  # already sent: not sent twice
        stored = MailOutbox.get_by_id(row.id)

    assert (stored.status, stored.attempts, stored.error) == ("sent", 2, None)
    [message] = inbox.messages()
    assert message["To"] == "dan@example.com"
    assert message["Subject"] == "Welcome"
    assert message["Message-ID"] == f"<{row.id}@example.org>"


def test_it_retries_oldest_first_and_stops_while_the_server_is_unreachable(make_app):
    clock.freeze(dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC))
    app = make_app(**smtp_settings(free_port()))
    with app.app_context():
        older = mail.send("one@example.com", "First", "1")
        clock.advance(dt.timedelta(minutes=1))
        newer = mail.send("two@example.com", "Second", "2")

        assert mail.retry_failed() == 0
        attempts = {row.id: row.attempts for row in MailOutbox.select()}

    # The oldest was tried again; the sweep then stopped instead of waiting on every row.
    assert attempts == {older.id: 2, newer.id: 1}


def test_it_gives_up_on_mail_after_max_attempts(make_app, smtp_servers):
    port = free_port()
    app = make_app(**smtp_settings(port))
    with app.app_context():
        row = mail.send("erin@example.com", "Hello", "Hi")
        inbox, _ = smtp_servers.start(port=port)
        assert mail.retry_failed(max_attempts=1) == 0
        assert MailOutbox.get_by_id(row.id).status == "failed"
    assert inbox.received == []


def test_it_does_not_retry_without_smtp(make_app, data_dir):
    app = make_app(**smtp_settings(free_port()))
    with app.app_context():
        row = mail.send("fay@example.com", "Hello", "Hi")
    app = make_app()  # the operator removed the mail server
    with app.app_context():
        assert mail.retry_failed() == 0
        assert MailOutbox.get_by_id(row.id).attempts == 1


# aiosmtpd warns about AUTH without TLS; on 127.0.0.1 in a test that is the point.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_it_authenticates_with_the_smtp_user(make_app, smtp_servers):
    inbox, port = smtp_servers.start(auth_require_tls=False, auth_required=True,
                                     authenticator=authenticate)
    app = make_app(**smtp_settings(port, SMTP_USER=SMTP_USER, SMTP_PASSWORD=SMTP_PASSWORD))
    with app.app_context():
        row = mail.send("gus@example.com", "Signed in", "Hello")

    assert row.status == "sent"
    [received] = inbox.received
    assert received["auth"] == SMTP_USER


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_it_records_a_refused_login_as_failed(make_app, smtp_servers):
    inbox, port = smtp_servers.start(auth_require_tls=False, auth_required=True,
                                     authenticator=authenticate)
    app = make_app(**smtp_settings(port, SMTP_USER=SMTP_USER, SMTP_PASSWORD="wrong"))
    with app.app_context():
        row = mail.send("hal@example.com", "Signed in", "Hello")

    assert row.status == "failed"
    assert row.error.startswith("SMTP 535")
    assert "wrong" not in row.error
    assert inbox.received == []


def test_it_fails_starttls_against_a_server_without_tls(make_app, smtp):
    inbox, port = smtp
    app = make_app(**smtp_settings(port, SMTP_SECURITY="starttls"))
    with app.app_context():
        row = mail.send("ivy@example.com", "Hello", "Hi")

    # Never falls back to plain text when the operator asked for STARTTLS.
    assert row.status == "failed"
    assert "STARTTLS" in row.error
    assert inbox.received == []


def test_it_refuses_header_injection(make_app):
    app = make_app()
    with app.app_context():
        with pytest.raises(InvalidRequest) as subject_error:
            mail.send("jo@example.com", "Hello\r\nBcc: victim@example.com", "Hi")
        with pytest.raises(InvalidRequest) as to_error:
            mail.send("jo@example.com\nBcc: victim@example.com", "Hello", "Hi")
        with pytest.raises(InvalidRequest):
            mail.send("not an address", "Hello", "Hi")
        assert MailOutbox.select().count() == 0
    assert subject_error.value.details["field"] == "subject"
    assert to_error.value.details["field"] == "to"


def test_it_refuses_to_send_inside_a_transaction(make_app):
    app = make_app()
    with app.app_context():
        with pytest.raises(RuntimeError), database.atomic():
            mail.send("kim@example.com", "Hello", "Hi")
        assert MailOutbox.select().count() == 0


def test_it_lists_the_outbox_newest_first_across_pages(make_app):
    start = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    app = make_app()
    with app.app_context():
        clock.freeze(start)
        same_second = [mail.send(f"same{n}@example.com", "Same", "x").id for n in range(3)]
        clock.advance(dt.timedelta(seconds=1))
        later = mail.send("later@example.com", "Later", "x").id
        clock.advance(dt.timedelta(microseconds=500))
        latest = mail.send("latest@example.com", "Latest", "x").id

        seen, cursor, pages = [], None, 0
        while True:
            rows, cursor = mail.list_outbox(limit=2, cursor=cursor)
            seen += [row.id for row in rows]
            pages += 1
            if cursor is None:
                break

        assert seen == [latest, later, *sorted(same_second, reverse=True)]
        assert pages == 3
        assert mail.list_outbox(limit=50) == (
            [MailOutbox.get_by_id(mail_id) for mail_id in seen], None)


def test_it_filters_the_outbox_by_status(make_app, smtp):
    _inbox, port = smtp
    app = make_app(**smtp_settings(port))
    with app.app_context():
        sent = mail.send("lee@example.com", "Hello", "Hi")
    app = make_app()
    with app.app_context():
        held = mail.send("max@example.com", "Hello", "Hi")
        assert [row.id for row in mail.list_outbox(status="held")[0]] == [held.id]
        assert [row.id for row in mail.list_outbox(status="sent")[0]] == [sent.id]
        assert mail.list_outbox(status="failed") == ([], None)


@pytest.mark.parametrize("arguments, field", [
    ({"limit": 0}, "limit"),
    ({"limit": 101}, "limit"),
    ({"status": "lost"}, "status"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"cursor": "WyJ4IiwxXQ"}, "cursor"),  # ["x",1]: decodes, but is not ours
])
def test_it_refuses_a_bad_outbox_query(make_app, arguments, field):
    app = make_app()
    with app.app_context(), pytest.raises(InvalidRequest) as error:
        mail.list_outbox(**arguments)
    assert error.value.details["field"] == field


def test_it_links_to_the_base_url(make_app):
    make_app(BASE_URL="https://panel.example.org/")
    assert mail.link("/reset?token=abc") == "https://panel.example.org/reset?token=abc"
    assert mail.link("verify") == "https://panel.example.org/verify"


@pytest.mark.parametrize("host, expected", [
    ("0.0.0.0", "http://127.0.0.1:9000/verify"),  # noqa: S104 - a setting, not a bind
    ("::", "http://127.0.0.1:9000/verify"),
    ("panel.lan", "http://panel.lan:9000/verify"),
    ("::1", "http://[::1]:9000/verify"),
])
def test_it_links_to_host_and_port_without_a_base_url(make_app, host, expected):
    make_app(HOST=host, PORT=9000)
    assert mail.link("/verify") == expected
