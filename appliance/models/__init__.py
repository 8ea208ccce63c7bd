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
from appliance.models.settings import Setting

__all__ = [
    "AuditLog", "AuthSession", "EmailToken", "Invite", "MailOutbox", "MfaFactor",
    "RecoveryCode", "RefreshToken", "Setting", "User",
]
