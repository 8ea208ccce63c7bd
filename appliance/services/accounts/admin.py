"""What administrators do to accounts: search, suspend, promote, invite, read logs.

Every function takes the acting `Principal`, refuses non-admins with 403 `admin_only`,
and writes an audit row in the same transaction as the change.
"""

from __future__ import annotations

import datetime as dt

from peewee import JOIN

from appliance.db import database
from appliance.errors import Conflict, Forbidden, InvalidRequest
from appliance.models import AuditLog, Invite, MailOutbox, SuspensionEnd, User
from appliance.services import audit, clock, pagination
from appliance.services.accounts import authcache, mail, sessions, users
from appliance.services.ids import hash_token, new_id, new_token
from appliance.services.principal import Principal

INVITE_TTL = dt.timedelta(days=14)


def require_admin(principal: Principal) -> None:
    """403 `admin_only` for users, 403 `scope_denied` for an admin's key without `admin`."""
    if principal.user.role != "admin":
        raise Forbidden("This needs an administrator.", code="admin_only")
    principal.require_scope("admin")


def search_users(principal: Principal, q: str = "", status: str | None = None,
                 limit: int = 50, cursor: str | None = None) -> pagination.Page[User]:
    """Users whose email or name contains `q`, newest first; returns (rows, next_cursor)."""
    require_admin(principal)
    query = User.select()
    if q.strip():
        needle = f"%{q.strip().lower()}%"
        query = query.where(User.email ** needle | User.display_name ** needle)
    if status:
        query = query.where(User.status == status)
    return pagination.page(query, User, limit, cursor)


def get_user(principal: Principal, user_id: str) -> User:
    require_admin(principal)
    return users.get_user(user_id)


@authcache.invalidates
def suspend_user(principal: Principal, user_id: str, reason: str,
                 until: dt.datetime | None = None) -> User:
    """Suspend an account: its sessions end, it cannot sign in until unsuspended - by an
    administrator, or by itself at `until` when given (the `lift_ended_suspensions`
    task) - and it is mailed the reason and the end (after the commit). 400 (field
    `until`) for an end that is not in the future."""
    require_admin(principal)
    if not reason.strip():
        raise InvalidRequest("Give a reason; the user is shown it.", field="reason")
    if until is not None:
        until = until.replace(tzinfo=dt.UTC) if until.tzinfo is None else until.astimezone(
            dt.UTC)
        if until <= clock.now():
            raise InvalidRequest("The end of the suspension must be in the future.",
                                 field="until")
    with database.atomic():
        user = users.get_user(user_id)
        if user.id == principal.user.id:
            raise Conflict("You cannot suspend yourself.", code="cannot_suspend_self")
        if user.status == "suspended":
            raise Conflict("The account is already suspended.", code="already_suspended")
        user.status, user.suspended_reason = "suspended", reason.strip()
        user.suspended_at = user.updated_at = clock.now()
        user.save()
        SuspensionEnd.delete().where(SuspensionEnd.user == user.id).execute()
        if until is not None:
            SuspensionEnd.create(user=user.id, until=until)
        sessions.revoke_all_sessions(user, "suspended")
        audit.record("admin.user_suspended", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip, reason=reason.strip(),
                     until=clock.isoformat(until) if until else None)
    users.mail_suspension(user)
    return user


@authcache.invalidates
def unsuspend_user(principal: Principal, user_id: str) -> User:
    require_admin(principal)
    with database.atomic():
        user = users.get_user(user_id)
        if user.status != "suspended":
            raise Conflict("The account is not suspended.", code="not_suspended")
        user.status, user.suspended_reason, user.suspended_at = "active", None, None
        user.updated_at = clock.now()
        user.save()
        SuspensionEnd.delete().where(SuspensionEnd.user == user.id).execute()
        audit.record("admin.user_unsuspended", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip)
    return user


@authcache.invalidates
def set_role(principal: Principal, user_id: str, role: str) -> User:
    """Make a user an admin or a plain user; the last administrator stays one."""
    require_admin(principal)
    if role not in ("admin", "user"):
        raise InvalidRequest("The role is admin or user.", field="role")
    with database.atomic():
        user = users.get_user(user_id)
        if user.role == role:
            return user
        if role == "user" and User.select().where(User.role == "admin").count() <= 1:
            raise Conflict("The last administrator cannot be demoted.", code="last_admin")
        user.role, user.updated_at = role, clock.now()
        user.save()
        audit.record("admin.role_changed", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip, role=role)
    return user


def resend_verification(principal: Principal, user_id: str) -> User:
    require_admin(principal)
    user = users.get_user(user_id)
    users.resend_verification(user)
    with database.atomic():
        audit.record("admin.verification_resent", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip)
    return user


def create_invite(principal: Principal, email: str | None = None) -> tuple[Invite, str]:
    """An invitation for invite-only signup; the code is returned only here."""
    require_admin(principal)
    code = new_token("inv_", 18)
    now = clock.now()
    with database.atomic():
        invite = Invite.create(id=new_id("inv"), code_hash=hash_token(code),
                               email=users.normalise_email(email) if email else None,
                               created_by=principal.user, created_at=now,
                               expires_at=now + INVITE_TTL)
        audit.record("admin.invite_created", actor=principal.user, target_type="invite",
                     target_id=invite.id, ip=principal.ip, email=invite.email)
    return invite, code


def list_mail(principal: Principal, status: str | None = None, limit: int = 50,
              cursor: str | None = None) -> pagination.Page[MailOutbox]:
    """The mail outbox, newest first; returns (rows, next_cursor)."""
    require_admin(principal)
    return mail.list_outbox(limit, cursor, status)


def list_audit_log(principal: Principal, action: str | None = None, actor: str | None = None,
                   limit: int = 50, cursor: str | None = None, *,
                   actor_email: str | None = None) -> pagination.Page[AuditLog]:
    """Audit rows newest first, each with its actor's row joined (`row.actor.email`; None
    when the actor is gone or there was none). `actor` filters by user id, `actor_email`
    by the actor's email (case-insensitive, exact)."""
    require_admin(principal)
    query = AuditLog.select(AuditLog, User).join(
        User, JOIN.LEFT_OUTER, on=(AuditLog.actor == User.id))
    if action:
        query = query.where(AuditLog.action == action)
    if actor:
        query = query.where(AuditLog.actor == actor)
    if actor_email:
        query = query.where(User.email == actor_email.strip().lower())
    return pagination.page(query, AuditLog, limit, cursor)
