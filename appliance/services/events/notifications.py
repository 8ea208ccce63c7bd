"""In-app notifications (and email for the important ones), made from events.

Contract:

- `from_event` is an events listener: it runs inside the transaction of every
  `events.emit`, so a notification commits (or rolls back) with its event and none is
  lost to a crash. Who is told:
  - instance.ready, instance.failed, job.failed: the one who started the operation (the
    job's user, else the instance's creator) and the project's owners - those of them who
    are still members of the live project. (A failed create is told once, by
    instance.failed, not again by its job.failed.)
  - billing.low_balance, billing.grace_started, billing.suspended, invoice.issued,
    api_key.expiring, webhook.disabled: the account the event names.
  - The operator's news, emitted once per active administrator as an account event of
    each (`outbox.emit_to_administrators`): appliance.backup_failed,
    limit_request.created, node.unhealthy and, while NOTIFY_ADMINS_OF_SIGNUPS is on,
    user.signed_up.
  - job.failed is also told to every active administrator not told already (the owner's
    link is a project page an administrator may not see: theirs leads to the admin's
    list of failed jobs), including the failed creates that instance.failed tells the
    owners.
  Other events make no notification.
- Email: low balance, grace started, suspension, invoice issued and a failed backup of the
  appliance also mail the user.
  The notification is written with `email_status="pending"` in the event's transaction;
  the mail itself goes through `mail.send` after the commit (the mail service does SMTP
  outside any transaction), by `send_pending_mail` - a scheduler task every minute that
  claims each row with a conditional UPDATE. A claim older than 10 minutes (a crash
  mid-send) is taken again, so a mail may rarely go twice but is never lost. A mail
  whose news is no longer true when its turn comes (`register_mail_check`: e.g. "out of
  credit" after credit was added) is not sent: `email_status="skipped"`.
- `notify_expiring_keys` (daily, and at start-up) records `api_key.expiring` once per
  key that expires within 7 days (`once_key`, unique).
- Reading and marking: a user sees and marks only their own notifications; anyone
  else's id is 404 `notification_not_found`. API keys cannot be used (a person's inbox).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from peewee import IntegrityError

from appliance.db import database
from appliance.errors import NotFound
from appliance.models import ApiKey, Event, Instance, Job, Membership, Notification, Project, User
from appliance.services import clock, money, pagination
from appliance.services.accounts import mail
from appliance.services.events import outbox
from appliance.services.events.event_types import ADMINISTRATOR_TYPES
from appliance.services.ids import new_id
from appliance.services.principal import Principal

log = logging.getLogger(__name__)

EMAILED = frozenset({"billing.low_balance", "billing.grace_started", "billing.suspended",
                     "invoice.issued", "appliance.backup_failed"})
PROJECT_TYPES = frozenset({"instance.ready", "instance.failed", "job.failed"})
ACCOUNT_TYPES = frozenset({"billing.low_balance", "billing.grace_started",
                           "billing.suspended", "invoice.issued", "api_key.expiring",
                           "webhook.disabled"}) | ADMINISTRATOR_TYPES
# Also told to every active administrator, with a link to the admin pages.
ALSO_ADMINISTRATORS = frozenset({"job.failed"})
TYPES = PROJECT_TYPES | ACCOUNT_TYPES
EXPIRY_NOTICE = dt.timedelta(days=7)
MAIL_CLAIM = dt.timedelta(minutes=10)
TITLE_MAX = 200


# Making them ----------------------------------------------------------------------------


def _money(minor: Any, currency: str) -> str:
    try:
        return money.format(int(minor), currency)
    except (TypeError, ValueError):
        return f"{minor} {currency}"


def _day(value: Any) -> str:
    """An ISO timestamp as '2025-02-03 12:00 UTC' (as given when it does not parse)."""
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _instance_link(project_id: str | None, instance_id: str | None) -> str:
    if not project_id or not instance_id:
        return f"/projects/{project_id}" if project_id else ""
    return f"/projects/{project_id}/instances/{instance_id}"


def _instance_notice(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    instance = data.get("instance") or {}
    name = instance.get("name") or "An instance"
    verb = "is running" if event.type == "instance.ready" else "failed"
    return (f"{name} {verb}", data.get("message") or "",
            _instance_link(event.project_id, instance.get("id")))


def _job_failed(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    job = data.get("job") or {}
    if job.get("type") == "template.create":
        return ("Saving a template failed", job.get("error") or "",
                f"/projects/{event.project_id}/templates" if event.project_id else "")
    operation = str(job.get("type") or "An operation").replace("instance.", "")
    return (f"{operation.capitalize()} failed", job.get("error") or "",
            _instance_link(event.project_id, job.get("instance_id")))


def _low_balance(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    currency = str(data.get("currency") or "")
    return ("Your balance is low",
            f"Your balance is {_money(data.get('balance'), currency)}, below your alert "
            f"at {_money(data.get('threshold'), currency)}. Add credit to keep your "
            "instances running.", "/billing/invoices")


def _grace_started(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    return ("You are out of credit",
            f"Your instances will be stopped at {_day(data.get('grace_ends_at'))} unless "
            "credit is added.", "/billing/invoices")


def _suspended(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    why = ("your spend cap was reached" if data.get("reason") == "spend_cap"
           else "the account ran out of credit")
    return ("Your account is suspended",
            f"Your instances are being stopped because {why}. They are kept, and start "
            "again once the account is in order.", "/billing/invoices")


def _invoice_issued(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    invoice = data.get("invoice") or {}
    total = _money(invoice.get("total"), str(invoice.get("currency") or ""))
    return (f"Invoice {invoice.get('number', '')} issued", f"Total {total}.",
            f"/billing/invoices/{invoice.get('id', '')}")


def _key_expiring(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    key = data.get("api_key") or {}
    return (f"API key {key.get('name', '')!r} expires soon",
            f"It stops working at {_day(key.get('expires_at'))}; rotate it or make a new "
            "one.", "/keys")


def _webhook_disabled(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    return ("A webhook was disabled", f"{data.get('url', '')}: {data.get('reason', '')}",
            f"/webhooks/{data.get('webhook_id', '')}")


def _backup_failed(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    return ("The backup of the appliance failed",
            f"The daily backup of the appliance failed at {_day(data.get('attempted_at'))}: "
            f"{data.get('error', '')}. It is tried again every hour.", "/admin/backups")


def _limit_requested(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    request = data.get("limit_request") or {}
    resource = str(request.get("resource") or "a limit").replace("_", " ")
    reason = f" {request.get('reason')}" if request.get("reason") else ""
    return (f"{request.get('email', 'Someone')} asks for more {resource}",
            f"From {request.get('current_limit')} to {request.get('requested')}.{reason}",
            "/admin/limits?status=pending")


def _node_unhealthy(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    node = data.get("node") or {}
    return (f"Node {node.get('name', '')} is unhealthy",
            f"{data.get('message', '')} No new instance is placed on it until it answers "
            "again.", f"/admin/nodes/{node.get('id', '')}")


def _signed_up(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    user = data.get("user") or {}
    name = f" ({user['display_name']})" if user.get("display_name") else ""
    return (f"{user.get('email', 'Someone')} signed up", f"A new account{name}.",
            f"/admin/users/{user.get('id', '')}")


def _job_failed_for_administrators(event: Event, data: dict[str, Any]) -> tuple[str, str, str]:
    title, body, _ = _job_failed(event, data)
    project = Project.get_or_none(Project.id == event.project_id)
    owner = project.created_by.email if project is not None else "an account"
    return f"{title} ({owner})", body, "/admin/jobs?status=failed&within_hours=24"


DESCRIBE = {
    "instance.ready": _instance_notice, "instance.failed": _instance_notice,
    "job.failed": _job_failed, "billing.low_balance": _low_balance,
    "billing.grace_started": _grace_started, "billing.suspended": _suspended,
    "invoice.issued": _invoice_issued, "api_key.expiring": _key_expiring,
    "webhook.disabled": _webhook_disabled, "appliance.backup_failed": _backup_failed,
    "limit_request.created": _limit_requested, "node.unhealthy": _node_unhealthy,
    "user.signed_up": _signed_up,
}
DESCRIBE_FOR_ADMINISTRATORS = {"job.failed": _job_failed_for_administrators}


def describe(event: Event, data: dict[str, Any]) -> tuple[str, str, str] | None:
    """(title, body, dashboard link) of the notification an event makes, or None."""
    describer = DESCRIBE.get(event.type)
    return describer(event, data) if describer is not None else None


def _live_members(project_id: str, user_ids: set[str]) -> set[str]:
    if not user_ids:
        return set()
    rows = (Membership.select(Membership.user).join(Project, on=(Membership.project ==
                                                                  Project.id))
            .where(Membership.project == project_id, Membership.user.in_(list(user_ids)),
                   Project.deleted_at.is_null()))
    return {row.user_id for row in rows}


def _actor(data: dict[str, Any]) -> str | None:
    job_id = (data.get("job") or {}).get("id") or data.get("job_id")
    if job_id:
        job = Job.get_or_none(Job.id == job_id)
        if job is not None and job.user_id:
            return job.user_id
    instance_id = (data.get("instance") or {}).get("id")
    if instance_id:
        instance = Instance.get_or_none(Instance.id == instance_id)
        if instance is not None:
            return instance.created_by_id
    return None


def recipients(event: Event, data: dict[str, Any]) -> list[str]:
    """The users an event's notification goes to (see the module's contract)."""
    if event.type in ACCOUNT_TYPES:
        return [event.user_id] if event.user_id else []
    if event.type not in PROJECT_TYPES or not event.project_id:
        return []
    if event.type == "job.failed" and (data.get("job") or {}).get("type") == "instance.create":
        return []  # instance.failed tells it
    owners = {row.user_id for row in Membership.select(Membership.user).where(
        Membership.project == event.project_id, Membership.role == "owner")}
    actor = _actor(data)
    return sorted(_live_members(event.project_id, owners | ({actor} if actor else set())))


def _administrators() -> list[str]:
    return [row.id for row in User.select(User.id).where(User.role == "admin",
                                                          User.status == "active")]


def from_event(event: Event) -> list[Notification]:
    """Make the event's notifications (inside its transaction; see the contract)."""
    if event.type not in TYPES:
        return []
    data = outbox.data_of(event)
    described = describe(event, data)
    if described is None:
        return []
    made = [_notify(user_id, event, *described) for user_id in recipients(event, data)]
    if event.type in ALSO_ADMINISTRATORS:
        told = {row.user_id for row in made}
        title, body, link = DESCRIBE_FOR_ADMINISTRATORS[event.type](event, data)
        made += [_notify(user_id, event, title, body, link)
                 for user_id in _administrators() if user_id not in told]
    return made


def _notify(user_id: str, event: Event, title: str, body: str, link: str) -> Notification:
    return Notification.create(
        id=new_id("ntf"), user=user_id, event=event.id, type=event.type,
        title=title[:TITLE_MAX], body=body, link=link[:300],
        email_status="pending" if event.type in EMAILED else None,
        created_at=event.created_at)


def _once_key(key: ApiKey) -> str:
    return f"api_key.expiring:{key.id}"


def notify_expiring_keys(now: dt.datetime | None = None) -> int:
    """Record `api_key.expiring` for each live key expiring within 7 days, once per key.

    Idempotent (a unique `once_key` per key): safe to run daily, at start-up, twice.
    Returns how many keys were announced.
    """
    now = now or clock.now()
    due = list(ApiKey.select().where(
        ApiKey.revoked_at.is_null(), ApiKey.expires_at.is_null(False),
        ApiKey.expires_at > now, ApiKey.expires_at <= now + EXPIRY_NOTICE))
    told = {key for (key,) in Notification.select(Notification.once_key).where(
        Notification.once_key.in_([_once_key(key) for key in due])).tuples()} if due else set()
    announced = 0
    for key in due:
        if _once_key(key) in told:
            continue
        try:
            with database.atomic():
                event = outbox.emit("api_key.expiring", user_id=key.user_id,
                                    project_id=key.project_id, data={"api_key": {
                                        "id": key.id, "name": key.name,
                                        "scopes": key.scopes.split(),
                                        "project_id": key.project_id,
                                        "expires_at": clock.isoformat(key.expires_at),
                                        "owner_id": key.user_id}})
                # The owner's notification carries the key: a second run fails here.
                Notification.update(once_key=_once_key(key)).where(
                    Notification.event == event.id).execute()
        except IntegrityError:
            continue  # another run told it meanwhile; this one rolled back
        announced += 1
    return announced


# Email ------------------------------------------------------------------------------------

# type -> check(user_id, event data): is what the mail says still true?
_mail_checks: dict[str, Callable[[str, dict[str, Any]], bool]] = {}


def register_mail_check(type: str, check: Callable[[str, dict[str, Any]], bool]) -> None:
    """Let the domain that emits `type` say whether its news is still true when the mail
    is about to go; a mail whose check answers False is skipped (the notification stays)."""
    _mail_checks[type] = check


def _still_true(row: Notification) -> bool:
    check = _mail_checks.get(row.type)
    if check is None:
        return True
    event = Event.get_or_none(Event.id == row.event_id)
    return check(row.user_id, outbox.data_of(event) if event is not None else {})



def _claim_mail(notification_id: str, now: dt.datetime) -> bool:
    with database.atomic():
        return Notification.update(email_status="sending", email_claimed_at=now).where(
            Notification.id == notification_id,
            (Notification.email_status == "pending")
            | ((Notification.email_status == "sending")
               & (Notification.email_claimed_at < now - MAIL_CLAIM))).execute() == 1


def send_pending_mail(limit: int = 200) -> int:
    """Mail the notifications waiting for it (oldest first); returns how many were handed
    to the mail service. Never raises for a delivery failure: the mail service keeps
    failed mail in its outbox and retries it."""
    now = clock.now()
    waiting = list(Notification.select(Notification.id).where(
        (Notification.email_status == "pending")
        | ((Notification.email_status == "sending")
           & (Notification.email_claimed_at < now - MAIL_CLAIM)))
        .order_by(Notification.created_at, Notification.id).limit(limit).tuples())
    handed = 0
    for (notification_id,) in waiting:
        if not _claim_mail(notification_id, now):
            continue
        row = Notification.select(Notification, User).join(User).where(
            Notification.id == notification_id).get()
        if not _still_true(row):
            with database.atomic():
                Notification.update(email_status="skipped").where(
                    Notification.id == notification_id).execute()
            continue
        greeting = f"Hello {row.user.display_name}," if row.user.display_name else "Hello,"
        link = f"\n\n{mail.link(row.link)}" if row.link else ""
        try:
            mail.send(row.user.email, row.title, f"{greeting}\n\n{row.body}{link}\n")
        except Exception:  # an unusable address: keep the notification, drop the mail
            log.exception("notification %s could not be mailed", notification_id)
        with database.atomic():
            Notification.update(email_status="sent").where(
                Notification.id == notification_id).execute()
        handed += 1
    return handed


# Reading and marking ------------------------------------------------------------------


def list_notifications(principal: Principal, unread: bool = False,
                       limit: int = pagination.DEFAULT_LIMIT,
                       cursor: str | None = None) -> pagination.Page[Notification]:
    """The caller's notifications, newest first; only unread ones when asked."""
    query = Notification.select().where(Notification.user == principal.user.id)
    if unread:
        query = query.where(Notification.read_at.is_null())
    return pagination.page(query, Notification, limit, cursor)


def unread_count(principal: Principal) -> int:
    return (Notification.select().where(Notification.user == principal.user.id,
                                        Notification.read_at.is_null()).count())


def get_notification(principal: Principal, notification_id: str) -> Notification:
    row = Notification.get_or_none(Notification.id == notification_id,
                                   Notification.user == principal.user.id)
    if row is None:
        raise NotFound("No such notification.", code="notification_not_found")
    return row


def mark_read(principal: Principal, notification_id: str) -> Notification:
    """Mark one of the caller's notifications read (again: no change); 404 for others'."""
    with database.atomic():
        row = get_notification(principal, notification_id)
        if row.read_at is None:
            row.read_at = clock.now()
            Notification.update(read_at=row.read_at).where(
                Notification.id == row.id, Notification.read_at.is_null()).execute()
    return row


def mark_all_read(principal: Principal) -> int:
    """Mark every unread notification of the caller read; returns how many changed."""
    with database.atomic():
        return Notification.update(read_at=clock.now()).where(
            Notification.user == principal.user.id,
            Notification.read_at.is_null()).execute()
