"""What billing keeps per account besides the ledger, and the operator's billing settings.

- `BillingAccount` rows: the account's spend cap and invoice details, and its enforcement
  state (grace period, suspension). Made on first use, with the operator's default
  low-balance alerts.
- Low-balance alerts: `balances_changed` is called by the ledger inside every posting's
  transaction; an armed alert whose threshold the balance fell below fires once
  (`fired_at`, `_notify_low_balance`), a fired one re-arms when the balance is back at or
  above its threshold.
- Credit ends what a lack of credit started, in the credit's own transaction
  (`credit_landed`, called by the ledger): a positive balance ends the grace period and
  lifts a suspension for an unpaid balance (unless the spend cap is reached), so no
  page shows "out of credit" after the credit is in, and the enforcement task finds
  nothing left to do.

This module reads only models, so the ledger can call it without an import cycle.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from peewee import JOIN, fn

from appliance import config
from appliance.models import BillingAccount, BillingAlert, Instance, Project, UsageDaily, User
from appliance.services import clock, settings
from appliance.services.events import outbox
from appliance.services.ids import new_id

log = logging.getLogger("appliance.billing")


@dataclass(frozen=True)
class OperatorSettings:
    currency: str
    vat_rate_bp: int
    min_balance: int
    grace_hours: int
    low_balance_thresholds: tuple[int, ...]
    operator_name: str
    operator_address: str
    backup_tier_basic_hourly: int
    backup_tier_extended_hourly: int
    backup_tier_basic_days: int
    backup_tier_extended_days: int
    backup_tier_extended_weeks: int


SETTING_NAMES = {
    "currency": "BILLING_CURRENCY",
    "vat_rate_bp": "BILLING_VAT_RATE_BP",
    "min_balance": "BILLING_MIN_BALANCE",
    "grace_hours": "BILLING_GRACE_HOURS",
    "low_balance_thresholds": "BILLING_LOW_BALANCE_THRESHOLDS",
    "operator_name": "BILLING_OPERATOR_NAME",
    "operator_address": "BILLING_OPERATOR_ADDRESS",
    "backup_tier_basic_hourly": "BILLING_BACKUP_TIER_BASIC_HOURLY",
    "backup_tier_extended_hourly": "BILLING_BACKUP_TIER_EXTENDED_HOURLY",
    "backup_tier_basic_days": "BACKUP_TIER_BASIC_DAYS",
    "backup_tier_extended_days": "BACKUP_TIER_EXTENDED_DAYS",
    "backup_tier_extended_weeks": "BACKUP_TIER_EXTENDED_WEEKS",
}


def operator_settings() -> OperatorSettings:
    """The billing settings in force: an admin's run-time value, else the configuration."""
    active = config.active()
    values = {field: settings.get(active, name) for field, name in SETTING_NAMES.items()}
    thresholds = str(values["low_balance_thresholds"] or "")
    values["low_balance_thresholds"] = tuple(int(part) for part in thresholds.split(",")
                                             if part.strip())
    values["operator_name"] = values["operator_name"] or settings.get(active, "SITE_NAME")
    return OperatorSettings(**values)


def currency() -> str:
    return settings.get(config.active(), "BILLING_CURRENCY")


def ensure_accounts(user_ids: Sequence[str]) -> None:
    """Make the missing billing accounts (and their default alerts) of these users.

    Call inside a write transaction.
    """
    if not user_ids:
        return
    missing = set(user_ids)
    for start in range(0, len(user_ids), 500):
        chunk = list(user_ids[start:start + 500])
        missing -= {row.user_id for row in BillingAccount.select(BillingAccount.user)
                    .where(BillingAccount.user.in_(chunk))}
    if not missing:
        return
    now = clock.now()
    thresholds = operator_settings().low_balance_thresholds
    for user_id in sorted(missing):
        BillingAccount.insert(user=user_id, created_at=now, updated_at=now).on_conflict_ignore(
        ).execute()
        for threshold in thresholds:
            BillingAlert.insert(id=new_id("bal"), user=user_id, threshold=threshold,
                                armed=True, created_at=now).on_conflict_ignore().execute()


def account(user_id: str) -> BillingAccount:
    """The account's billing row, made when missing (call inside a write transaction)."""
    row = BillingAccount.get_or_none(BillingAccount.user == user_id)
    if row is None:
        ensure_accounts([user_id])
        row = BillingAccount.get(BillingAccount.user == user_id)
    return row


def balances_changed(balances: dict[str, int]) -> None:
    """Fire and re-arm the alerts of accounts whose balance just changed (same transaction)."""
    ids = list(balances)
    now = clock.now()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for alert in BillingAlert.select().where(BillingAlert.user.in_(chunk)):
            current = balances[alert.user_id]
            if alert.armed and current < alert.threshold:
                changed = (BillingAlert.update(armed=False, fired_at=now)
                           .where(BillingAlert.id == alert.id, BillingAlert.armed).execute())
                if changed:
                    alert.armed, alert.fired_at = False, now
                    _notify_low_balance(User.get_by_id(alert.user_id), alert, current)
            elif not alert.armed and current >= alert.threshold:
                BillingAlert.update(armed=True).where(BillingAlert.id == alert.id).execute()


def month_start(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_to_date(user_id: str, now: dt.datetime | None = None) -> int:
    """What usage cost the account since the first of this UTC month."""
    start = month_start(now or clock.now()).date().isoformat()
    return (UsageDaily.select(fn.COALESCE(fn.SUM(UsageDaily.amount), 0))
            .where(UsageDaily.user == user_id, UsageDaily.day >= start).scalar())


def lift_instances(user_id: str) -> int:
    """Unmark the suspended instances of the account's projects (they may start again)."""
    ids = [row.id for row in Instance.select(Instance.id)
           .join(Project, JOIN.INNER, on=(Instance.project == Project.id))
           .where(Project.created_by == user_id, Instance.deleted_at.is_null(),
                  Instance.suspended_at.is_null(False))]
    if ids:
        Instance.update(suspended_at=None).where(Instance.id.in_(ids)).execute()
    return len(ids)


def credit_landed(user_id: str, balance: int) -> None:
    """Inside a credit's transaction: end the grace period once the balance is positive,
    and lift a suspension for an unpaid balance when the spend cap is not reached either.

    A suspension for the spend cap stays (credit does not raise the cap), and a balance
    still at or below zero changes nothing: the enforcement task decides those.
    """
    if balance <= 0:
        return
    row = BillingAccount.get_or_none(BillingAccount.user == user_id)
    if row is None or (row.grace_started_at is None and row.suspended_at is None):
        return
    now = clock.now()
    changes: dict = {"grace_started_at": None, "updated_at": now}
    cap_reached = row.spend_cap is not None and month_to_date(user_id, now) >= row.spend_cap
    lifted = row.suspended_reason == "balance" and not cap_reached
    if lifted:
        changes.update(suspended_at=None, suspended_reason=None)
    BillingAccount.update(**changes).where(BillingAccount.user == user_id).execute()
    if lifted:
        lift_instances(user_id)
        log.info("account %s credited: its suspension is lifted", user_id)


def _notify_low_balance(user: User, alert: BillingAlert, balance: int) -> None:
    """The hook a fired low-balance alert calls, inside the posting's transaction: a
    `billing.low_balance` event (webhooks, an in-app notification and an email)."""
    log.info("low balance: account %s is at %s, below its alert at %s", user.id, balance,
             alert.threshold)
    outbox.emit("billing.low_balance", user_id=user.id, data={
        "balance": balance, "threshold": alert.threshold, "currency": currency()})
