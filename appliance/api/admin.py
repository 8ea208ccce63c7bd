"""Administration over JSON: users, invitations, the mail outbox, the audit log, limits and
the backups of the appliance itself."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import Field

from appliance.api.account import (
    LimitOut,
    LimitRequestList,
    LimitRequestOut,
    LimitsOut,
    ResourceName,
)
from appliance.api.auth import UserOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.services.accounts import admin, mail
from appliance.services.limits import quotas
from appliance.services.ops import selfbackup
from appliance.services.principal import Principal

bp = ApiBlueprint("admin_api", __name__)
TAGS = ("admin",)
ERRORS = (403, 404, 409)
AUTH = USER_OR_KEY  # an administrator, or their key with the admin scope


class UserQuery(ListQuery):
    q: str = Field("", max_length=254, description="Part of the email or name.")
    status: str | None = Field(None, pattern="^(active|suspended)$")


class AdminUserOut(UserOut):
    suspended_reason: str | None
    suspended_at: dt.datetime | None
    suspended_until: dt.datetime | None = Field(
        description="When the suspension lifts by itself; null: when lifted by hand.")

    @classmethod
    def of(cls, user) -> AdminUserOut:
        return cls(**UserOut.of(user).model_dump(), suspended_reason=user.suspended_reason,
                   suspended_at=user.suspended_at, suspended_until=user.suspended_until)


class UserList(Schema):
    data: list[AdminUserOut]
    page: PageInfo


class SuspendIn(Schema):
    reason: str = Field(min_length=1, max_length=500,
                        description="Shown to the user at sign-in and mailed to them.")
    until: dt.datetime | None = Field(None, description="When the suspension lifts by "
                                      "itself (within a minute); omitted: until lifted.")


class UserRoleIn(Schema):
    role: str = Field(pattern="^(admin|user)$")


class InviteIn(Schema):
    email: str | None = Field(None, max_length=254)


class InviteOut(Schema):
    id: str
    code: str
    email: str | None
    expires_at: dt.datetime
    signup_url: str


class MailOut(Schema):
    id: str
    to: str
    subject: str
    body: str
    status: str
    error: str | None
    attempts: int
    created_at: dt.datetime
    sent_at: dt.datetime | None


class MailQuery(ListQuery):
    status: str | None = Field(None, pattern="^(queued|sent|failed|held)$")


class MailList(Schema):
    data: list[MailOut]
    page: PageInfo


class AuditOut(Schema):
    id: str
    actor: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str
    success: bool
    details: dict[str, Any]
    created_at: dt.datetime


class AuditQuery(ListQuery):
    action: str | None = Field(None, max_length=60)
    actor: str | None = Field(None, max_length=40)


class AuditList(Schema):
    data: list[AuditOut]
    page: PageInfo


@bp.operation("/admin/users", summary="Search users", tags=TAGS, query=UserQuery,
              response=UserList, auth=AUTH, errors=(403,))
def list_users(principal: Principal, query: UserQuery):
    rows, cursor = admin.search_users(principal, query.q, query.status, query.limit,
                                      query.cursor)
    return page_body([AdminUserOut.of(u) for u in rows], query.limit, cursor)


@bp.operation("/admin/users/<user_id>", summary="One user", tags=TAGS,
              response=AdminUserOut, auth=AUTH, errors=(403, 404))
def get_user(principal: Principal, user_id: str):
    return AdminUserOut.of(admin.get_user(principal, user_id))


@bp.operation("/admin/users/<user_id>/suspend", "POST", summary="Suspend a user",
              tags=TAGS, body=SuspendIn, response=AdminUserOut, auth=AUTH, errors=ERRORS)
def suspend_user(principal: Principal, user_id: str, body: SuspendIn):
    return AdminUserOut.of(admin.suspend_user(principal, user_id, body.reason, body.until))


@bp.operation("/admin/users/<user_id>/unsuspend", "POST", summary="Lift a suspension",
              tags=TAGS, response=AdminUserOut, auth=AUTH, errors=ERRORS)
def unsuspend_user(principal: Principal, user_id: str):
    return AdminUserOut.of(admin.unsuspend_user(principal, user_id))


@bp.operation("/admin/users/<user_id>/role", "PUT", summary="Make admin or user", tags=TAGS,
              body=UserRoleIn, response=AdminUserOut, auth=AUTH, errors=ERRORS)
def set_role(principal: Principal, user_id: str, body: UserRoleIn):
    return AdminUserOut.of(admin.set_role(principal, user_id, body.role))


@bp.operation("/admin/users/<user_id>/resend-verification", "POST",
              summary="Mail the user a new verification link", tags=TAGS,
              response=AdminUserOut, status=202, auth=AUTH, errors=ERRORS,
              commits_apart=True)  # mails after its commit
def resend_verification(principal: Principal, user_id: str):
    return AdminUserOut.of(admin.resend_verification(principal, user_id))


@bp.operation("/admin/invites", "POST", summary="Invite someone (invite-only signup)",
              tags=TAGS, body=InviteIn, response=InviteOut, status=201, auth=AUTH,
              errors=(403,))
def create_invite(principal: Principal, body: InviteIn):
    invite, code = admin.create_invite(principal, body.email)
    return {"id": invite.id, "code": code, "email": invite.email,
            "expires_at": invite.expires_at, "signup_url": mail.link(f"/signup?invite={code}")}


@bp.operation("/admin/mail-outbox", summary="Mail the appliance sent or kept", tags=TAGS,
              query=MailQuery, response=MailList, auth=AUTH, errors=(403,))
def mail_outbox(principal: Principal, query: MailQuery):
    rows, cursor = admin.list_mail(principal, query.status, query.limit, query.cursor)
    return page_body([MailOut(id=m.id, to=m.to_addr, subject=m.subject, body=m.body,
                              status=m.status, error=m.error, attempts=m.attempts,
                              created_at=m.created_at, sent_at=m.sent_at) for m in rows],
                     query.limit, cursor)


@bp.operation("/admin/audit-log", summary="Who did what, when and from where", tags=TAGS,
              query=AuditQuery, response=AuditList, auth=AUTH, errors=(403,))
def audit_log(principal: Principal, query: AuditQuery):
    rows, cursor = admin.list_audit_log(principal, query.action, query.actor, query.limit,
                                        query.cursor)
    return page_body([AuditOut(id=r.id, actor=r.actor_id, action=r.action,
                               target_type=r.target_type, target_id=r.target_id, ip=r.ip,
                               success=r.success, details=json.loads(r.details or "{}"),
                               created_at=r.created_at) for r in rows],
                     query.limit, cursor)


class LimitRequestQuery(ListQuery):
    status: str | None = Field(None, pattern="^(pending|approved|declined)$")


class DecisionIn(Schema):
    note: str = Field("", max_length=1000)


class LimitDefaults(Schema):
    """The operator's default limit of every resource (omitted ones are unchanged)."""

    instances: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)
    vcpus: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)
    memory_mb: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)
    backups: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)
    template_storage_gb: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)
    api_keys: int | None = Field(None, ge=0, le=quotas.MAX_LIMIT)


class LimitOverrideIn(Schema):
    resource: ResourceName
    value: int | None = Field(ge=0, le=quotas.MAX_LIMIT,
                              description="null: back to the default.")


@bp.operation("/admin/limit-requests", summary="Requests for higher limits", tags=TAGS,
              query=LimitRequestQuery, response=LimitRequestList, auth=AUTH, errors=(403,))
def list_limit_requests(principal: Principal, query: LimitRequestQuery):
    rows, cursor = quotas.list_all_requests(principal, query.status, query.limit, query.cursor)
    return page_body([LimitRequestOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/admin/limit-requests/<request_id>/approve", "POST",
              summary="Approve: the requested limit becomes the account's", tags=TAGS,
              body=DecisionIn, response=LimitRequestOut, auth=AUTH, errors=ERRORS)
def approve_limit_request(principal: Principal, request_id: str, body: DecisionIn):
    return LimitRequestOut.of(quotas.decide(principal, request_id, True, body.note))


@bp.operation("/admin/limit-requests/<request_id>/decline", "POST",
              summary="Decline a limit request", tags=TAGS, body=DecisionIn,
              response=LimitRequestOut, auth=AUTH, errors=ERRORS)
def decline_limit_request(principal: Principal, request_id: str, body: DecisionIn):
    return LimitRequestOut.of(quotas.decide(principal, request_id, False, body.note))


@bp.operation("/admin/limits/defaults", summary="Default limits of every account", tags=TAGS,
              response=LimitDefaults, auth=AUTH, errors=(403,))
def limit_defaults(principal: Principal):
    admin.require_admin(principal)
    return quotas.defaults()


@bp.operation("/admin/limits/defaults", "PUT", summary="Change the default limits", tags=TAGS,
              body=LimitDefaults, response=LimitDefaults, auth=AUTH, errors=(403,))
def set_limit_defaults(principal: Principal, body: LimitDefaults):
    return quotas.set_defaults(principal, body.model_dump(exclude_none=True))


@bp.operation("/admin/users/<user_id>/limits", summary="A user's limits", tags=TAGS,
              response=LimitsOut, auth=AUTH, errors=(403, 404))
def user_limits(principal: Principal, user_id: str):
    user = admin.get_user(principal, user_id)
    return {"data": [LimitOut.of(limit) for limit in quotas.limits(user)]}


@bp.operation("/admin/users/<user_id>/limits", "PUT", summary="Override one of a user's limits",
              tags=TAGS, body=LimitOverrideIn, response=LimitsOut, auth=AUTH, errors=ERRORS)
def set_user_limit(principal: Principal, user_id: str, body: LimitOverrideIn):
    found = quotas.set_override(principal, user_id, body.resource, body.value)
    return {"data": [LimitOut.of(limit) for limit in found]}


class SelfBackupRunOut(Schema):
    trigger: Literal["scheduled", "manual"]
    status: Literal["ok", "failed"]
    started_at: dt.datetime
    finished_at: dt.datetime
    file: str = Field(description="The archive written; empty when the run failed.")
    size_bytes: int
    sha256: str = Field(description="Of the whole archive file.")
    error: str

    @classmethod
    def of(cls, run) -> SelfBackupRunOut:
        return cls(trigger=run.trigger, status=run.status, started_at=run.started_at,
                   finished_at=run.finished_at, file=run.file, size_bytes=run.size_bytes,
                   sha256=run.sha256, error=run.error)


class SelfBackupArchiveOut(Schema):
    file: str
    size_bytes: int
    created_at: dt.datetime


class SelfBackupOut(Schema):
    schedule: Literal["daily", "off"]
    keep: int
    directory: str
    database_supported: bool = Field(
        description="False when DATABASE_URL names a database other than SQLite: the "
                    "appliance does not back that up itself.")
    last_run: SelfBackupRunOut | None
    last_success: SelfBackupRunOut | None
    archives: list[SelfBackupArchiveOut] = Field(description="In the directory, newest first.")


@bp.operation("/admin/self-backup", summary="Backups of the appliance itself", tags=TAGS,
              description="The daily backup of the appliance (database, secrets, uploads): "
                          "its settings, the last run and the archives kept. `appliance "
                          "backup` runs are listed too.",
              response=SelfBackupOut, auth=AUTH, errors=(403,))
def self_backup(principal: Principal):
    found = selfbackup.status(principal)
    return SelfBackupOut(
        schedule=found.schedule, keep=found.keep, directory=str(found.directory),
        database_supported=found.database_supported,
        last_run=SelfBackupRunOut.of(found.last_run) if found.last_run else None,
        last_success=SelfBackupRunOut.of(found.last_success) if found.last_success else None,
        archives=[SelfBackupArchiveOut(file=str(path), size_bytes=size, created_at=made)
                  for path, size, made in found.archives])
