"""A real SMTP server for tests: aiosmtpd on 127.0.0.1 keeping what it receives."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage


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
