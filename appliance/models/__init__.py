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
    SuspensionEnd,
    User,
)
from appliance.models.backups import Backup, BackupTierPeriod, Template
from appliance.models.billing import (
    BillingAccount,
    BillingAlert,
    LedgerEntry,
    PromoCode,
    PromoRedemption,
    UsageDaily,
    UsageMeter,
    UsageRecord,
)
from appliance.models.catalog import App, Image, Node, Plan
from appliance.models.events import Event
from appliance.models.idempotency import IdempotencyRecord
from appliance.models.instances import Instance, InstanceEvent, Job
from appliance.models.invoices import Invoice, InvoiceCounter, InvoiceLine, InvoiceRun, StripeTopup
from appliance.models.keys import ApiKey, SshKey
from appliance.models.limits import LimitOverride, LimitRequest
from appliance.models.metrics import InstanceMetric, MetricCounter, MetricSample, NodeMetric
from appliance.models.notifications import Notification
from appliance.models.ops import SchedulerLease, SelfBackupRun
from appliance.models.projects import Membership, Project
from appliance.models.settings import Setting
from appliance.models.webhooks import Webhook, WebhookAttempt, WebhookDelivery

__all__ = [
    "ApiKey", "App", "AuditLog", "AuthSession", "Backup", "BillingAccount", "BillingAlert",
    "EmailToken", "IdempotencyRecord", "Image", "Instance", "InstanceEvent", "Invite", "Job",
    "LedgerEntry", "LimitOverride", "LimitRequest", "MailOutbox", "Membership", "MfaFactor",
    "Node", "Plan", "Project", "PromoCode", "PromoRedemption", "RecoveryCode", "RefreshToken",
    "Setting", "SshKey", "UsageDaily", "UsageMeter", "UsageRecord", "User",
]
__all__ += ["Invoice", "InvoiceCounter", "InvoiceLine", "InvoiceRun", "StripeTopup"]
__all__ += ["Event", "Webhook", "WebhookAttempt", "WebhookDelivery"]
__all__ += ["Notification"]
__all__ += ["InstanceMetric", "MetricCounter", "MetricSample", "NodeMetric"]
__all__ += ["SchedulerLease", "SelfBackupRun"]
__all__ += ["Template"]
__all__ += ["SuspensionEnd"]
__all__ += ["BackupTierPeriod"]
