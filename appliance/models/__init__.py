"""Peewee models, one module per domain. Their tables are created by migrations only."""

from appliance.models.accounts import (
    AuditLog,
    AuthSession,
    EmailToken,
    Invite,
    MailOutbox,
    MfaFactor,
    RecoveryCode,
    RefreshToken,
    User,
)
from appliance.models.idempotency import IdempotencyRecord
from appliance.models.keys import ApiKey, SshKey
from appliance.models.limits import LimitOverride, LimitRequest
from appliance.models.projects import Membership, Project
from appliance.models.settings import Setting

__all__ = [
    "ApiKey", "AuditLog", "AuthSession", "EmailToken", "IdempotencyRecord", "Invite",
    "LimitOverride", "LimitRequest", "MailOutbox", "Membership", "MfaFactor", "Project",
    "RecoveryCode", "RefreshToken", "Setting", "SshKey", "User",
]
