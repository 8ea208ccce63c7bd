"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 keeping what it receives.

`SmtpServers().start(...)` starts one on a free port ((inbox, port)); with
`auth_required=True, authenticator=authenticate` it takes SMTP_USER / SMTP_PASSWORD only
and answers anything else with 535."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.conftest import free_port


class Inbox:
    """aiosmtpd handler that keeps every accepted message."""

    def __init__(self) -> None:
        self.received: list[dict] = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's name
        self.received.append({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "message": email.message_from_bytes(envelope.original_content,
                                                policy=policy.default),
            "auth": session.auth_data,
        })
        return "250 Message accepted for delivery"

    def messages(self) -> list[EmailMessage]:
        return [item["message"] for item in self.received]


SMTP_USER = "mailer"
SMTP_PASSWORD = "correct horse battery"


def authenticate(server, session, envelope, mechanism, auth_data):
    if not isinstance(auth_data, LoginPassword):
        return AuthResult(success=False, handled=False)
    if auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode():
        return AuthResult(success=True, auth_data=SMTP_USER)
    return AuthResult(success=False, handled=False)  # handled=False: aiosmtpd answers 535


class SmtpServers:
    """Starts aiosmtpd controllers on 127.0.0.1 and stops them all after the test."""

    def __init__(self) -> None:
        self.controllers: list[Controller] = []

    def start(self, port: int | None = None, **smtp_parameters) -> tuple[Inbox, int]:
        inbox = Inbox()
        port = port or free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_parameters)
        controller.start()
        self.controllers.append(controller)
        return inbox, port

    def stop_all(self) -> None:
        for controller in self.controllers:
            controller.stop()
