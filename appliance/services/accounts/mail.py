"""Outgoing email: every mail is written to the outbox first, then delivered by SMTP.

Contract:

- `send(to, subject, body)` first commits a `MailOutbox` row. Without `SMTP_HOST` the
  row is "held" (the admin reads it in the dashboard's outbox; one INFO log line names
  recipient and subject). With `SMTP_HOST` it is "queued" and delivered at once, then
  becomes "sent", or "failed" with a short `error`. A delivery failure never raises:
  the mail stays in the outbox for `retry_failed()`.
- The SMTP conversation happens outside any database transaction (SQLite has one
  writer): row committed, SMTP, then a second short transaction records the outcome.
  So `send()` refuses to run inside a caller's transaction (RuntimeError): call it after
  your own `database.atomic()` block has committed.
- `retry_failed()` claims each "failed" row with a conditional UPDATE before re-sending
  it, so two schedulers never deliver one row twice; it stops early when the server
  cannot be reached at all.
- `list_outbox()` pages newest first with an opaque cursor; `link()` builds absolute
  dashboard URLs for mail bodies.

The body often holds a secret token: it is stored in the outbox (the admin's fallback
when there is no mail server) but never logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from html import escape
from typing import Any, cast

from appliance import config
from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import MailOutbox
from appliance.services import branding, clock, pagination
from appliance.services import settings as runtime  # `settings` names the dict passed on
from appliance.services.ids import new_id

log = logging.getLogger(__name__)

STATUSES = ("queued", "sent", "failed", "held")
SMTP_SETTINGS = ("SMTP_HOST", "SMTP_PORT", "SMTP_SECURITY", "SMTP_USER", "SMTP_PASSWORD",
                 "SMTP_FROM")
MAX_LIMIT = 100
MAX_ERROR_CHARS = 300


def send(to: str, subject: str, body: str, *, background: bool = False) -> MailOutbox:
    """Record a mail in the outbox and deliver it when SMTP is configured.

    Returns the row in its final state: "held" (no SMTP_HOST), "sent" or "failed".
    Raises InvalidRequest for an unusable address or subject (nothing is stored) and
    RuntimeError when called inside a database transaction; never for delivery failures.
    """
    _check_headers(to, subject)
    if database.in_transaction():
        raise RuntimeError("mail.send() must be called after the caller's transaction "
                           "has committed, not inside it")
    settings = current_settings()
    # Without a mail server the row is written "held" at once: nothing will move it on.
    status = "queued" if settings["SMTP_HOST"] else "held"
    with database.atomic():
        mail = MailOutbox.create(
            id=new_id("mail"), to_addr=to, subject=subject, body=body, status=status,
            attempts=0, created_at=clock.now(),
        )
    if status == "held":
        log.info("mail %s to %s with subject %r was kept in the outbox (SMTP_HOST is not "
                 "set)", mail.id, to, subject)
        return mail
    if background:
        # The caller answers at once, whatever the SMTP server does (a password-reset
        # request must take the same time whether or not the account exists).
        threading.Thread(target=_attempt_in_background, args=(mail.id, settings),
                         name=f"mail-{mail.id}", daemon=True).start()
        return mail
    _attempt(mail, settings)
    return MailOutbox.get_by_id(mail.id)


def _attempt_in_background(mail_id: str, settings: dict[str, Any]) -> None:
    with database.connection_context():
        _attempt(MailOutbox.get_by_id(mail_id), settings)


def retry_failed(max_attempts: int = 5) -> int:
    """Re-send "failed" mails with fewer than `max_attempts` attempts, oldest first.

    Returns how many were sent. Does nothing (returns 0) when SMTP is not configured.
    When the server cannot be reached at all, the sweep stops after that attempt: the
    remaining rows keep their attempt count for the next sweep.
    """
    settings = current_settings()
    if not settings["SMTP_HOST"]:
        return 0
    candidates = list(
        MailOutbox.select(MailOutbox.id)
        .where((MailOutbox.status == "failed") & (MailOutbox.attempts < max_attempts))
        .order_by(MailOutbox.created_at.asc(), MailOutbox.id.asc())
        .tuples()
    )
    sent = 0
    for (mail_id,) in candidates:
        with database.atomic():
            claimed = (
                MailOutbox.update(status="queued")
                .where((MailOutbox.id == mail_id) & (MailOutbox.status == "failed")
                       & (MailOutbox.attempts < max_attempts))
                .execute()
            )
        if claimed != 1:
            continue  # another worker took it, or it changed meanwhile
        error = _attempt(MailOutbox.get_by_id(mail_id), settings)
        if error is None:
            sent += 1
        elif _is_unreachable(error):
            break
    return sent


def current_settings() -> dict[str, Any]:
    """The configuration, with the SMTP settings as they are now: an administrator may
    have changed them at run time (services/settings.py)."""
    active = config.active()
    return {**active, **{name: runtime.get(active, name) for name in SMTP_SETTINGS}}


def send_test(to: str) -> tuple[MailOutbox, str]:
    """Send a test mail now, through the outbox like any other, and return the row with
    the SMTP server's answer: its reply to the message ("250 ...") or, when it refused,
    why (the row's `error`). Raises InvalidRequest (field `smtp_host`) without SMTP."""
    settings = current_settings()
    if not settings["SMTP_HOST"]:
        raise InvalidRequest("No SMTP server is set up: mail is kept in the outbox.",
                             field="smtp_host")
    _check_headers(to, TEST_SUBJECT)
    with database.atomic():
        row = MailOutbox.create(
            id=new_id("mail"), to_addr=to, subject=TEST_SUBJECT, body=TEST_BODY,
            status="queued", attempts=0, created_at=clock.now())
    replies: list[str] = []
    error = _attempt(row, settings, replies)
    row = MailOutbox.get_by_id(row.id)
    return row, row.error if error is not None else (replies[-1] if replies else "sent")


TEST_SUBJECT = "Test mail from the appliance"
TEST_BODY = ("This is a test mail, sent from the Settings page of the appliance to check "
             "its SMTP settings. Nothing needs doing.\n")


def list_outbox(limit: int = 50, cursor: str | None = None,
                status: str | None = None) -> pagination.Page[MailOutbox]:
    """One page of the outbox, newest first (created_at desc, id desc), and the next cursor.

    `next_cursor` is None on the last page. Raises InvalidRequest for a limit outside
    1-100, an unknown status or a cursor this function did not hand out.
    """
    query = MailOutbox.select()
    if status is not None:
        if status not in STATUSES:
            raise InvalidRequest("status must be one of " + ", ".join(STATUSES) + ".",
                                 field="status")
        query = query.where(MailOutbox.status == status)
    return pagination.page(query, MailOutbox, limit, cursor)


def link(path: str) -> str:
    """An absolute URL for a dashboard path, for links in mail bodies.

    BASE_URL (trailing slash trimmed) + path; without BASE_URL, http://HOST:PORT + path,
    with a wildcard listen address (0.0.0.0, ::) shown as 127.0.0.1.
    """
    settings = config.active()
    if not path.startswith("/"):
        path = "/" + path
    base = settings["BASE_URL"].rstrip("/")
    if base:
        return base + path
    host = settings["HOST"]
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - compared, not bound
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings['PORT']}{path}"


def _check_headers(to: str, subject: str) -> None:
    # A line break in a header value would let a caller's input add headers.
    if not to or "\r" in to or "\n" in to or "@" not in parseaddr(to)[1]:
        raise InvalidRequest("The recipient is not an email address.", field="to")
    if "\r" in subject or "\n" in subject:
        raise InvalidRequest("The subject must be one line.", field="subject")
    if len(subject) > MailOutbox.subject.max_length:
        raise InvalidRequest("The subject is too long.", field="subject")


def _attempt(mail: MailOutbox, settings: dict[str, Any],
             replies: list[str] | None = None) -> Exception | None:
    """Deliver one queued row and record the outcome; return the error, if any. The
    server's reply to the message is appended to `replies`."""
    try:
        reply = _deliver(_build_message(mail, settings), settings)
        if replies is not None:
            replies.append(reply)
    except (OSError, smtplib.SMTPException) as exc:
        error = _describe(exc, settings)
        with database.atomic():
            (MailOutbox.update(status="failed", error=error,
                               attempts=MailOutbox.attempts + 1)
             .where(MailOutbox.id == mail.id).execute())
        log.warning("mail %s to %s with subject %r could not be sent (attempt %d): %s",
                    mail.id, mail.to_addr, mail.subject, mail.attempts + 1, error)
        return exc
    with database.atomic():
        (MailOutbox.update(status="sent", error=None, sent_at=clock.now(),
                           attempts=MailOutbox.attempts + 1)
         .where(MailOutbox.id == mail.id).execute())
    log.info("mail %s to %s with subject %r sent", mail.id, mail.to_addr, mail.subject)
    return None


def _build_message(mail: MailOutbox, settings: dict[str, Any]) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings["SMTP_FROM"]
    message["To"] = mail.to_addr
    message["Subject"] = mail.subject
    created_at = mail.created_at
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=dt.UTC)
    message["Date"] = format_datetime(created_at)
    # Derived from the row id, so a retried mail keeps its Message-ID and a receiver
    # that saw the first attempt can tell it is the same message.
    domain = parseaddr(settings["SMTP_FROM"])[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = f"<{mail.id}@{domain}>"
    brand = branding.current(settings)
    foot = [part for part in (brand.footer_text, brand.support_url) if part]
    text = mail.body + (f"\n-- \n{brand.site_name}\n" + "\n".join(foot) + "\n"
                        if foot else "")
    message.set_content(text)
    if brand.logo is not None:
        # An HTML alternative shows the logo above the same text (the image travels
        # with the mail, cid:logo: a mail client fetches nothing from the appliance).
        message.add_alternative(
            f'<!doctype html><html><body><p><img src="cid:logo" alt="{escape(brand.site_name)}"'
            f' height="40"></p><pre style="font-family: inherit; white-space: pre-wrap">'
            f"{escape(text)}</pre></body></html>", subtype="html")
        html = cast(EmailMessage, message.get_payload()[1])  # type: ignore[index]
        html.add_related(brand.logo.data, *brand.logo.content_type.split("/"), cid="<logo>",
                         filename=f"logo.{brand.logo.extension}", disposition="inline")
    return message


def _deliver(message: EmailMessage, settings: dict[str, Any]) -> str:
    """Send one message; return the server's reply to it ("250 2.0.0 Ok: queued ...")."""
    host, port = settings["SMTP_HOST"], settings["SMTP_PORT"]
    timeout = settings["SMTP_TIMEOUT_SECONDS"]
    security = settings["SMTP_SECURITY"]
    smtp: _KeepsDataReply
    if security == "tls":
        smtp = _KeepsDataReplyOverTls(host, port, timeout=timeout,
                                      context=ssl.create_default_context())
    else:
        smtp = _KeepsDataReply(host, port, timeout=timeout)
    with smtp:
        if security == "starttls":
            smtp.starttls(context=ssl.create_default_context())
        if settings["SMTP_USER"]:
            smtp.login(settings["SMTP_USER"], settings["SMTP_PASSWORD"])
        refused = smtp.send_message(message)
        if refused:  # some recipients refused, the others took it: say who refused
            raise smtplib.SMTPRecipientsRefused(refused)
        return smtp.data_reply


class _KeepsDataReply(smtplib.SMTP):
    """smtplib's client, keeping the server's reply to the message (DATA) it sent."""

    data_reply = ""

    def data(self, msg: Any) -> tuple[int, bytes]:
        code, text = super().data(msg)
        self.data_reply = f"{code} {_text(text)}"
        return code, text


class _KeepsDataReplyOverTls(_KeepsDataReply, smtplib.SMTP_SSL):
    pass


def _is_unreachable(exc: Exception) -> bool:
    """The server could not be reached at all (as opposed to refusing this one mail)."""
    # smtplib.SMTPException is itself an OSError; those come from a server that answered.
    return isinstance(exc, OSError) and not isinstance(exc, smtplib.SMTPException)


def _describe(exc: Exception, settings: dict[str, Any]) -> str:
    """A one-line reason for the outbox and the log: no stack trace, no secrets."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        reasons = [f"{code} {_text(reply)}" for code, reply in exc.recipients.values()]
        text = "recipient refused: " + "; ".join(reasons)
    elif isinstance(exc, smtplib.SMTPResponseException):
        text = f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}"
    elif isinstance(exc, smtplib.SMTPException):
        text = str(exc) or type(exc).__name__
    else:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        text = (f"cannot reach {settings['SMTP_HOST']}:{settings['SMTP_PORT']}: "
                f"{reason or type(exc).__name__}")
    text = " ".join(text.split())
    return text[:MAX_ERROR_CHARS]


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
