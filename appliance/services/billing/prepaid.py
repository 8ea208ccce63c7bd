"""Prepaid billing: the account's overview, alerts, settings and spend cap; operator grants;
provisioning readiness and enforcement (grace period, suspension).

Whose money: usage is billed to the account that owns the project (its creator), so
every function here works on `principal.user`'s own account; nobody sees another
account's billing (admins through the operator functions, which check `require_admin`).

Enforcement (`enforce`, a scheduler task after each metering tick): an account with a
priced instance whose balance is at or below zero enters a grace period
(`BILLING_GRACE_HOURS`); when it ends - or at once when the month's spend reaches the
account's spend cap - the account is suspended: its instances are marked suspended and
stop jobs are queued (never deleted), and starting them answers 402 `payment_required`.
The suspension lifts by itself once the balance is positive again (and the cap is not
reached).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from peewee import JOIN, IntegrityError, ModelSelect, fn

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest, NotFound, PaymentRequired
from appliance.models import (
    BillingAccount,
    BillingAlert,
    Instance,
    Job,
    LedgerEntry,
    Plan,
    Project,
    UsageRecord,
    User,
)
from appliance.services import audit, clock, pagination
from appliance.services import settings as runtime  # `settings` names the operator's, below
from appliance.services.accounts.admin import get_user, require_admin
from appliance.services.billing import billing_state, ledger, metering
from appliance.services.billing.billing_state import OperatorSettings, operator_settings
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.instances import jobs
from appliance.services.principal import Principal

MAX_ALERTS = 10
GRANT_TYPES = ("grant", "adjustment", "refund")
TEXT_MAX = {"invoice_name": 200, "invoice_address": 1000, "vat_id": 40}

log = logging.getLogger("appliance.billing")


# Reading the account ----------------------------------------------------------------


@dataclass(frozen=True)
class Readiness:
    can_provision: bool
    reason: str | None  # suspended | below_minimum_balance | spend_cap_reached
    shortfall: int  # minor units missing to reach the minimum balance


# How far the run-out is projected: past it a date means nothing (and past the year
# 9999 it cannot even be written), so the overview says "more than 10 years".
RUN_OUT_HORIZON = dt.timedelta(days=3650)
RUN_OUT_HORIZON_TEXT = "more than 10 years"


@dataclass(frozen=True)
class Overview:
    balance: int
    currency: str
    burn_rate_per_day: int  # what a day costs at what is metered now (metering.hourly_rate)
    burn_rate_last_24h: int  # what the last 24 hours did cost (the history)
    month_to_date: int
    projected_run_out_at: dt.datetime | None  # None: nothing burns, nothing left, or beyond
    hours_left: float | None
    run_out_beyond_horizon: bool  # the balance lasts longer than RUN_OUT_HORIZON
    spend_cap: int | None
    minimum_balance: int
    readiness: Readiness
    status: str  # active | grace | suspended
    grace_ends_at: dt.datetime | None
    suspended_at: dt.datetime | None
    suspended_reason: str | None


month_start = billing_state.month_start
month_to_date = billing_state.month_to_date


def burn_rate_per_day(user_id: str, now: dt.datetime | None = None) -> int:
    """What a day costs at what is metered now: 24 times `metering.hourly_rate`."""
    return round(metering.hourly_rate(user_id, now) * 24)


def burn_last_24h(user_id: str, now: dt.datetime | None = None) -> int:
    """The account's usage over the last 24 hours (the history, a second figure)."""
    since = (now or clock.now()) - dt.timedelta(hours=24)
    return (UsageRecord.select(fn.COALESCE(fn.SUM(UsageRecord.amount), 0))
            .where(UsageRecord.user == user_id, UsageRecord.hour > since).scalar())


def readiness(user_id: str, settings: OperatorSettings | None = None) -> Readiness:
    """May the account start new billable work (create, resize)?"""
    settings = settings or operator_settings()
    account = BillingAccount.get_or_none(BillingAccount.user == user_id)
    if account is not None and account.suspended_at is not None:
        return Readiness(False, "suspended", max(0, 1 - ledger.balance(user_id)))
    balance = ledger.balance(user_id)
    if balance < settings.min_balance:
        return Readiness(False, "below_minimum_balance", settings.min_balance - balance)
    if account is not None and account.spend_cap is not None and (
            month_to_date(user_id) >= account.spend_cap):
        return Readiness(False, "spend_cap_reached", 0)
    return Readiness(True, None, 0)


def require_can_provision(user_id: str) -> None:
    """402 `payment_required` (details: reason, balance, minimum, shortfall) when the
    account may not start new billable work."""
    settings = operator_settings()
    ready = readiness(user_id, settings)
    if ready.can_provision:
        return
    assert ready.reason is not None  # every refusal names its reason
    messages = {
        "suspended": "The account is suspended for an unpaid balance; top up first.",
        "below_minimum_balance": "The balance is below the minimum needed to provision; "
                                 "top up or redeem a promo code first.",
        "spend_cap_reached": "This month's spending reached your spend cap; raise the cap "
                             "to provision more.",
    }
    raise PaymentRequired(messages[ready.reason], details={
        "reason": ready.reason, "balance": ledger.balance(user_id),
        "minimum_balance": settings.min_balance, "shortfall": ready.shortfall,
        "currency": settings.currency})


def overview(principal: Principal) -> Overview:
    principal.require_scope("billing:read")
    user_id, now = principal.user.id, clock.now()
    settings = operator_settings()
    balance = ledger.balance(user_id)
    hourly = metering.hourly_rate(user_id, now)
    run_out, hours_left, beyond = projected_run_out(balance, hourly, now)
    account = BillingAccount.get_or_none(BillingAccount.user == user_id)
    status, grace_ends = "active", None
    if account is not None and account.suspended_at is not None:
        status = "suspended"
    elif account is not None and account.grace_started_at is not None:
        status = "grace"
        grace_ends = account.grace_started_at + dt.timedelta(hours=settings.grace_hours)
    return Overview(
        balance=balance, currency=settings.currency, burn_rate_per_day=round(hourly * 24),
        burn_rate_last_24h=burn_last_24h(user_id, now),
        month_to_date=month_to_date(user_id, now), projected_run_out_at=run_out,
        hours_left=hours_left, run_out_beyond_horizon=beyond,
        spend_cap=account.spend_cap if account else None,
        minimum_balance=settings.min_balance, readiness=readiness(user_id, settings),
        status=status, grace_ends_at=grace_ends,
        suspended_at=account.suspended_at if account else None,
        suspended_reason=account.suspended_reason if account else None)


def projected_run_out(balance: int, hourly: float, now: dt.datetime,
                      ) -> tuple[dt.datetime | None, float | None, bool]:
    """(run-out time, hours left, beyond the horizon) of `balance` at `hourly` minor units
    an hour: (None, None, False) when nothing burns or nothing is left, and (None, None,
    True) when it lasts longer than RUN_OUT_HORIZON."""
    if hourly <= 0 or balance <= 0:
        return None, None, False
    hours = balance / hourly
    if hours > RUN_OUT_HORIZON / dt.timedelta(hours=1):
        return None, None, True
    return now + dt.timedelta(hours=hours), round(hours, 1), False


def list_credits(principal: Principal, limit: int = 50, cursor: str | None = None,
                 type: str | None = None) -> pagination.Page[LedgerEntry]:
    """The caller's ledger, newest first; returns (entries, next_cursor)."""
    principal.require_scope("billing:read")
    return ledger.entries(principal.user.id, limit, cursor, type)


def statement_csv(principal: Principal) -> Iterator[str]:
    principal.require_scope("billing:read")
    return ledger.statement_csv(principal.user.id, billing_state.currency())


# Account settings and the spend cap ---------------------------------------------------


def account_settings(principal: Principal) -> BillingAccount:
    principal.require_scope("billing:read")
    found = BillingAccount.get_or_none(BillingAccount.user == principal.user.id)
    if found is not None:
        return found
    with database.atomic():
        return billing_state.account(principal.user.id)


def _check_cap(spend_cap: int | None) -> int | None:
    if spend_cap is not None and not 0 <= spend_cap <= ledger.MAX_AMOUNT:
        raise InvalidRequest(f"A spend cap is from 0 to {ledger.MAX_AMOUNT} minor units, or "
                             "null for none.", field="spend_cap")
    return spend_cap


def update_settings(principal: Principal, *, spend_cap: int | None, invoice_name: str,
                    invoice_address: str, vat_id: str) -> BillingAccount:
    """Replace the account's billing settings (all of them, as PUT does)."""
    principal.require_scope("billing:write")
    values = {"invoice_name": invoice_name.strip(), "invoice_address": invoice_address.strip(),
              "vat_id": vat_id.strip().upper().replace(" ", "")}
    for field, text in values.items():
        if len(text) > TEXT_MAX[field]:
            raise InvalidRequest(f"{field} has at most {TEXT_MAX[field]} characters.",
                                 field=field)
    _check_cap(spend_cap)
    with database.atomic():
        billing_state.account(principal.user.id)
        BillingAccount.update(spend_cap=spend_cap, updated_at=clock.now(), **values).where(
            BillingAccount.user == principal.user.id).execute()
        audit.record("billing.settings_changed", actor=principal.user, ip=principal.ip,
                     spend_cap=spend_cap)
    return BillingAccount.get_by_id(principal.user.id)


def set_spend_cap(principal: Principal, spend_cap: int | None) -> BillingAccount:
    principal.require_scope("billing:write")
    _check_cap(spend_cap)
    with database.atomic():
        billing_state.account(principal.user.id)
        BillingAccount.update(spend_cap=spend_cap, updated_at=clock.now()).where(
            BillingAccount.user == principal.user.id).execute()
        audit.record("billing.spend_cap_set", actor=principal.user, ip=principal.ip,
                     spend_cap=spend_cap)
    return BillingAccount.get_by_id(principal.user.id)


# Low-balance alerts -------------------------------------------------------------------


def list_alerts(principal: Principal) -> list[BillingAlert]:
    principal.require_scope("billing:read")
    return list(BillingAlert.select().where(BillingAlert.user == principal.user.id)
                .order_by(BillingAlert.threshold.desc()))


def create_alert(principal: Principal, threshold: int) -> BillingAlert:
    """Alert when the balance falls below `threshold`; armed unless already below it."""
    principal.require_scope("billing:write")
    if isinstance(threshold, bool) or not 1 <= threshold <= ledger.MAX_AMOUNT:
        raise InvalidRequest(f"A threshold is from 1 to {ledger.MAX_AMOUNT} minor units.",
                             field="threshold")
    user_id = principal.user.id
    with database.atomic():
        billing_state.account(user_id)
        existing = BillingAlert.select().where(BillingAlert.user == user_id)
        if existing.where(BillingAlert.threshold == threshold).exists():
            raise Conflict("You already have an alert at this threshold.",
                           code="alert_exists", details={"field": "threshold"})
        if existing.count() >= MAX_ALERTS:
            raise Conflict(f"An account has at most {MAX_ALERTS} alerts.",
                           code="too_many_alerts")
        below = ledger.balance(user_id) < threshold
        alert = BillingAlert.create(id=new_id("bal"), user=user_id, threshold=threshold,
                                    armed=not below, created_at=clock.now())
        audit.record("billing.alert_created", actor=principal.user, ip=principal.ip,
                     threshold=threshold)
    return alert


def delete_alert(principal: Principal, alert_id: str) -> None:
    principal.require_scope("billing:write")
    with database.atomic():
        deleted = BillingAlert.delete().where(BillingAlert.id == alert_id,
                                              BillingAlert.user == principal.user.id).execute()
        if not deleted:
            raise NotFound("No such alert.", code="alert_not_found")
        audit.record("billing.alert_deleted", actor=principal.user, ip=principal.ip,
                     alert_id=alert_id)


# Operator side ----------------------------------------------------------------------


def grant(principal: Principal, user_id: str, amount: int, note: str, *,
          type: str = "grant") -> LedgerEntry:
    """Credit (or, as an adjustment, debit) an account with a note; audited.

    Grants and refunds are positive; an adjustment may go either way.
    """
    require_admin(principal)
    if type not in GRANT_TYPES:
        raise InvalidRequest(f"type is one of {', '.join(GRANT_TYPES)}.", field="type")
    ledger.check_amount(amount)
    if type != "adjustment" and amount < 0:
        raise InvalidRequest(f"A {type} is positive; use an adjustment to take credit away.",
                             field="amount")
    note = (note or "").strip()
    if not note or len(note) > ledger.NOTE_MAX:
        raise InvalidRequest(f"Say why, in 1-{ledger.NOTE_MAX} characters; the account "
                             "holder sees the note.", field="note")
    with ledger.durable():
        user = get_user(principal, user_id)
        entry = ledger.post(user.id, type, amount, f"{type}:{new_id('crd')}", note=note,
                            created_by=principal.user.id)
        audit.record(f"billing.{type}", actor=principal.user, target_type="user",
                     target_id=user.id, ip=principal.ip, amount=amount, note=note, entry=entry.id)
    return entry


ACCOUNT_STATUSES = ("active", "grace", "suspended")


def account_balances(
        principal: Principal, q: str = "", limit: int = 50, cursor: str | None = None,
        status: str | None = None,
) -> pagination.Page[tuple[User, int, BillingAccount | None]]:
    """Every account with its balance and its BillingAccount row (None when it has none),
    newest account first: ([(user, balance, billing_account)], next_cursor). `status`
    keeps the accounts in a grace period (not yet suspended), the suspended ones, or the
    others (`active`)."""
    require_admin(principal)
    query = User.select()
    if q.strip():
        needle = f"%{q.strip().lower()}%"
        query = query.where(User.email ** needle | User.display_name ** needle)
    if status == "active":
        query = query.where(User.id.not_in(BillingAccount.select(BillingAccount.user).where(
            BillingAccount.grace_started_at.is_null(False)
            | BillingAccount.suspended_at.is_null(False))))
    elif status:
        query = query.where(User.id.in_(_accounts_in(status)))
    rows, next_cursor = pagination.page(query, User, limit, cursor)
    found = ledger.balances([user.id for user in rows])
    accounts = {a.user_id: a for a in BillingAccount.select().where(
        BillingAccount.user.in_([user.id for user in rows]))}
    return [(user, found[user.id], accounts.get(user.id)) for user in rows], next_cursor


def _accounts_in(status: str) -> ModelSelect[BillingAccount]:
    """The ids of the accounts in a grace period, or of the suspended ones."""
    accounts = BillingAccount.select(BillingAccount.user)
    if status == "grace":
        return accounts.where(BillingAccount.grace_started_at.is_null(False),
                              BillingAccount.suspended_at.is_null())
    if status == "suspended":
        return accounts.where(BillingAccount.suspended_at.is_null(False))
    raise InvalidRequest(f"status is one of {', '.join(ACCOUNT_STATUSES)}.", field="status")


def count_accounts(status: str) -> int:
    """How many accounts are in a grace period (`grace`) or suspended (`suspended`)."""
    return _accounts_in(status).count()


def user_credits(principal: Principal, user_id: str, limit: int = 50,
                 cursor: str | None = None) -> pagination.Page[LedgerEntry]:
    require_admin(principal)
    user = get_user(principal, user_id)
    return ledger.entries(user.id, limit, cursor)


# Enforcement --------------------------------------------------------------------------


def _owners_with_priced_instances() -> set[str]:
    rows = (Project.select(Project.created_by).distinct()
            .join(Instance, on=(Instance.project == Project.id))
            .join(Plan, on=(Instance.plan == Plan.id))
            .where(Instance.deleted_at.is_null(), Plan.price_hourly > 0).tuples())
    return {user_id for (user_id,) in rows}


def enforce(now: dt.datetime | None = None) -> dict[str, int]:
    """Start or end grace periods, suspend and lift suspensions; returns counts.

    Idempotent: it compares what should be with what is, and queues a stop only for a
    suspended account's instance that runs with no operation in progress.
    """
    now = now or clock.now()
    settings = operator_settings()
    counts = {"grace_started": 0, "suspended": 0, "lifted": 0, "stops_queued": 0}
    with ledger.durable():
        priced = _owners_with_priced_instances()
        flagged = {a.user_id for a in BillingAccount.select(BillingAccount.user).where(
            BillingAccount.grace_started_at.is_null(False)
            | BillingAccount.suspended_at.is_null(False)
            | BillingAccount.spend_cap.is_null(False))}
        users = sorted(priced | flagged)
        balances = ledger.balances(users)
        billing_state.ensure_accounts(users)
        for account in BillingAccount.select().where(BillingAccount.user.in_(users)):
            _enforce_one(account, balances[account.user_id], account.user_id in priced,
                         settings=settings, now=now, counts=counts)
    if counts["stops_queued"]:
        jobs.wake()
    return counts


def _enforce_one(account: BillingAccount, balance: int, has_priced: bool, *,
                 settings: OperatorSettings, now: dt.datetime, counts: dict[str, int]) -> None:
    grace = account.grace_started_at
    if balance > 0:
        grace = None
    elif has_priced and grace is None:
        grace = now
        counts["grace_started"] += 1
        _notify_grace_started(
            account.user, now + dt.timedelta(hours=settings.grace_hours))
    cap_hit = account.spend_cap is not None and month_to_date(account.user_id, now) >= (
        account.spend_cap) and has_priced
    grace_over = grace is not None and now - grace >= dt.timedelta(hours=settings.grace_hours)
    reason = "spend_cap" if cap_hit else "balance" if grace_over else None
    suspended_at, current_reason = account.suspended_at, account.suspended_reason
    if reason and suspended_at is None:
        suspended_at, current_reason = now, reason
        counts["suspended"] += 1
        _notify_suspended(account.user, reason)
    elif reason is None and suspended_at is not None:
        suspended_at = current_reason = None
        counts["lifted"] += 1
        _lift(account.user_id)
    if (grace, suspended_at, current_reason) != (account.grace_started_at,
                                                 account.suspended_at,
                                                 account.suspended_reason):
        BillingAccount.update(grace_started_at=grace, suspended_at=suspended_at,
                              suspended_reason=current_reason, updated_at=now).where(
            BillingAccount.user == account.user_id).execute()
    if suspended_at is not None:
        counts["stops_queued"] += _suspend_instances(account.user_id, now)


def _owned_live(user_id: str) -> ModelSelect[Instance]:
    return (Instance.select(Instance.id, Instance.project, Instance.status,
                            Instance.suspended_at)
            .join(Project, JOIN.INNER, on=(Instance.project == Project.id))
            .where(Project.created_by == user_id, Instance.deleted_at.is_null()))


def _suspend_instances(user_id: str, now: dt.datetime) -> int:
    """Mark the account's instances suspended and queue a stop for each running one."""
    live = list(_owned_live(user_id))
    unmarked = [i.id for i in live if i.suspended_at is None]
    if unmarked:
        Instance.update(suspended_at=now).where(Instance.id.in_(unmarked)).execute()
    busy = {job.instance_id for job in Job.select(Job.instance).where(
        Job.instance.in_([i.id for i in live]), Job.status.in_(jobs.UNFINISHED))}
    queued = 0
    for instance in live:
        if instance.status != "running" or instance.id in busy:
            continue
        try:
            with database.atomic():
                jobs.enqueue("instance.stop", project_id=instance.project_id,
                             instance_id=instance.id, message="Stopping: billing suspension")
            queued += 1
        except IntegrityError:  # an operation started meanwhile; the next run comes back
            continue
    return queued


def _lift(user_id: str) -> None:
    billing_state.lift_instances(user_id)


def set_operator_settings(principal: Principal, values: dict[str, object]) -> OperatorSettings:
    """Change some of the operator's billing settings (field name -> value) at run time."""
    require_admin(principal)
    raw = {}
    for field, value in values.items():
        name = billing_state.SETTING_NAMES.get(field)
        if name is None:
            raise InvalidRequest(f"Unknown billing setting {field}.", field=field)
        text = (",".join(str(item) for item in value) if isinstance(value, list | tuple)
                else str(value))
        raw[name] = (field, text)
    with database.atomic():
        for name, (field, value) in raw.items():
            try:
                runtime.put(name, value)
            except InvalidRequest as exc:
                raise InvalidRequest(exc.message, field=field) from None
        details: dict[str, Any] = dict(raw.values())  # setting names, none of record()'s own
        audit.record("billing.operator_settings_changed", actor=principal.user, ip=principal.ip,
                     **details)
    return operator_settings()


# Is a billing mail's news still true when it is about to go? (notifications'
# register_mail_check, filled in by services/wiring.py.)


def still_in_grace(user_id: str, data: dict[str, Any]) -> bool:
    """billing.grace_started: the account is still out of credit in its grace period."""
    account = BillingAccount.get_or_none(BillingAccount.user == user_id)
    return (account is not None and account.grace_started_at is not None
            and account.suspended_at is None)


def still_suspended(user_id: str, data: dict[str, Any]) -> bool:
    """billing.suspended: the account is still suspended."""
    account = BillingAccount.get_or_none(BillingAccount.user == user_id)
    return account is not None and account.suspended_at is not None


def still_low(user_id: str, data: dict[str, Any]) -> bool:
    """billing.low_balance: the balance is still below the alert's threshold."""
    threshold = data.get("threshold")
    return not isinstance(threshold, int) or ledger.balance(user_id) < threshold


def _notify_grace_started(user: User, grace_ends_at: dt.datetime) -> None:
    """The hook called when an account reaches zero with priced instances (inside the
    enforcement transaction): a `billing.grace_started` event."""
    log.info("account %s is out of credit: grace period until %s", user.id, grace_ends_at)
    outbox.emit("billing.grace_started", user_id=user.id, data={
        "currency": billing_state.currency(), "grace_ends_at": clock.isoformat(grace_ends_at)})


def _notify_suspended(user: User, reason: str) -> None:
    """The hook called when an account is suspended (inside the enforcement transaction):
    a `billing.suspended` event with the balance and the reason (balance or spend_cap)."""
    log.warning("account %s suspended (%s): its instances are being stopped", user.id, reason)
    outbox.emit("billing.suspended", user_id=user.id, data={
        "balance": ledger.balance(user.id), "currency": billing_state.currency(),
        "reason": reason})
