"""Hourly metering: one usage record, and one ledger debit, per metered thing and hour.

`tick()` (a scheduler task) looks at every metered thing - today instances, stopped ones
too, since their resources stay reserved - and records each started UTC hour from its
creation until its deletion that is not recorded yet, up to the current hour. A downtime
is caught up on the next tick. Each record is priced at the plan's hourly price, capped
so the amount for one instance and plan in a calendar month never passes the plan's
monthly cap; a record with an amount debits the account that owns the project (the
ledger reference `usage:<subject>:<hour>`), and the daily rollup that charts read grows
by it - all in one durable write transaction.

Why it never counts an hour twice: the transaction takes the write lock first (`BEGIN
IMMEDIATE`), so a second tick - a re-run, another scheduler - reads what the first one
wrote; the unique key (subject, resource, hour) on usage records and the unique ledger
reference refuse a duplicate anyway, and a refused insert rolls the whole tick back.
A crash part-way leaves nothing: the transaction is all or none.

How it stays fast: one query for the things and where their metering stands (the
`usage_meter` row: last hour, this month's sum), bulk inserts, one commit.

Other resources plug in with `register_meter(resource, collect)`: `collect(now)` returns
`Subject`s. Backups are one (`backup`, SKU `backup-gb`): their size in GB is the quantity,
priced per GB-month (BILLING_BACKUP_GB_MONTH) and charged pro rata by the hour - hour k
of a month of H hours costs floor(P(k+1)/H) - floor(Pk/H) of the month's price P, so a
whole month sums to P exactly and no hour rounds to a lasting zero. Templates are metered
the same way (`template`, SKU `template-gb`, BILLING_TEMPLATE_GB_MONTH, which defaults to
the backup price).
Backup tiers are
another (`backup_tier`, SKU `backup-tier-basic` / `-extended`): each stretch of time an
instance had a paid tier, an hour at the tier's hourly price.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

from peewee import JOIN, fn

from appliance import config
from appliance.db import database, db_time, insert_statement
from appliance.models import (
    Backup,
    BackupTierPeriod,
    Instance,
    Plan,
    Project,
    Template,
    UsageMeter,
    UsageRecord,
)
from appliance.services import clock, settings
from appliance.services.billing import ledger

log = logging.getLogger("appliance.metering")

HOUR = dt.timedelta(hours=1)
INSTANCE = "instance"


@dataclass
class Subject:
    """A metered thing and where its metering stands."""

    subject_id: str
    resource: str
    user_id: str  # the account billed: the project's owner
    project_id: str
    sku: str
    unit_price: int  # per quantity and hour, minor units
    monthly_cap: int | None  # per subject, SKU and calendar month
    quantity: int
    start: dt.datetime  # exists from
    end: dt.datetime | None  # until (deleted), or still there
    last_hour: dt.datetime | None = None  # the meter's state (None: nothing recorded yet)
    meter_sku: str | None = None
    meter_month: str | None = None
    month_amount: int = 0
    monthly_price: int | None = None  # per quantity and month, charged pro rata by the hour
    name: str = ""  # what people call it: the instance's name (a backup: its instance's)


_meters: dict[str, Callable[[dt.datetime], list[Subject]]] = {}


def register_meter(resource: str, collect: Callable[[dt.datetime], list[Subject]]) -> None:
    """Meter another resource: `collect(now)` returns its subjects not yet fully metered."""
    _meters[resource] = collect


def hour_of(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def month_of(hour: dt.datetime) -> str:
    return hour.strftime("%Y-%m")


def _instances(now: dt.datetime) -> list[Subject]:
    meter = UsageMeter.alias()
    rows = (Instance.select(Instance.id, Instance.project, Instance.created_at,
                            Instance.deleted_at, Plan.slug, Plan.price_hourly,
                            Plan.price_monthly_cap, Project.created_by,
                            meter.last_hour, meter.sku, meter.month, meter.month_amount,
                            Instance.name)
            .join(Plan, on=(Instance.plan == Plan.id))
            .switch(Instance).join(Project, on=(Instance.project == Project.id))
            .switch(Instance).join(meter, JOIN.LEFT_OUTER,
                                   on=((meter.subject_id == Instance.id)
                                       & (meter.resource == INSTANCE)))
            .where(meter.closed.is_null() | (meter.closed == False)))  # noqa: E712
    # The raw cursor: peewee's per-field conversion of 10,000 rows costs more than the rest.
    return [Subject(ins_id, INSTANCE, owner, project, slug, price, cap, 1, _utc(created),
                    _utc(deleted), _utc(last), meter_sku, meter_month, month_amount or 0,
                    name=name or "")
            for (ins_id, project, created, deleted, slug, price, cap, owner, last, meter_sku,
                 meter_month, month_amount, name) in database.execute(rows)]


@overload
def _utc(value: None) -> None: ...
@overload
def _utc(value: str | dt.datetime) -> dt.datetime: ...
def _utc(value: Any) -> dt.datetime | None:
    """A stored timestamp (naive UTC text or datetime) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


register_meter(INSTANCE, _instances)

BACKUP, BACKUP_SKU = "backup", "backup-gb"
# Kept (or being taken, restored from or deleted), and deleted ones up to their
# deleted_at; failed ones keep nothing (size_gb 0 from then on), so they cost nothing.
BACKUP_METERED = ("creating", "available", "restoring", "deleting", "deleted")


def _backups(now: dt.datetime) -> list[Subject]:
    """Backups kept in the store (available, or being taken), until deleted; their
    size_gb is the archive's size in GiB rounded up (the plan's disk until it is written)."""
    meter = UsageMeter.alias()
    price = backup_gb_month_price()
    rows = (Backup.select(Backup.id, Backup.project, Backup.created_at, Backup.deleted_at,
                          Backup.size_gb, Project.created_by, meter.last_hour, meter.sku,
                          meter.month, meter.month_amount, Backup.instance_name)
            .join(Project, on=(Backup.project == Project.id))
            .switch(Backup).join(meter, JOIN.LEFT_OUTER,
                                 on=((meter.subject_id == Backup.id)
                                     & (meter.resource == BACKUP)))
            .where(Backup.status.in_(BACKUP_METERED),
                   meter.closed.is_null() | (meter.closed == False)))  # noqa: E712
    return [Subject(backup_id, BACKUP, owner, project, BACKUP_SKU, price, None, size,
                    _utc(created), _utc(deleted), _utc(last), meter_sku, meter_month,
                    month_amount or 0, monthly_price=price, name=name or "")
            for (backup_id, project, created, deleted, size, owner, last, meter_sku,
                 meter_month, month_amount, name) in database.execute(rows)]


register_meter(BACKUP, _backups)


BACKUP_TIER = "backup_tier"
TIER_PRICES = {"basic": "BILLING_BACKUP_TIER_BASIC_HOURLY",
               "extended": "BILLING_BACKUP_TIER_EXTENDED_HOURLY"}


def tier_hourly_price(tier: str) -> int:
    """A backup tier's hourly price (minor units), as the billing settings have it."""
    name = TIER_PRICES.get(tier)
    return settings.get(config.active(), name) if name is not None else 0


def _backup_tiers(now: dt.datetime) -> list[Subject]:
    """Each stretch of time an instance had a paid backup tier (services/instances/
    backup_tiers.py), until another tier was chosen or the instance deleted: an hour at
    the tier's hourly price, SKU `backup-tier-<tier>`."""
    meter = UsageMeter.alias()
    prices = {tier: tier_hourly_price(tier) for tier in TIER_PRICES}
    rows = (BackupTierPeriod.select(
                BackupTierPeriod.id, BackupTierPeriod.project, BackupTierPeriod.tier,
                BackupTierPeriod.started_at,
                fn.COALESCE(BackupTierPeriod.ended_at, Instance.deleted_at),
                Project.created_by, meter.last_hour, meter.sku, meter.month,
                meter.month_amount, Instance.name)
            .join(Instance, on=(BackupTierPeriod.instance == Instance.id))
            .switch(BackupTierPeriod).join(Project, on=(BackupTierPeriod.project == Project.id))
            .switch(BackupTierPeriod).join(meter, JOIN.LEFT_OUTER,
                                           on=((meter.subject_id == BackupTierPeriod.id)
                                               & (meter.resource == BACKUP_TIER)))
            .where(meter.closed.is_null() | (meter.closed == False)))  # noqa: E712
    return [Subject(period_id, BACKUP_TIER, owner, project, f"backup-tier-{tier}",
                    prices.get(tier, 0), None, 1, _utc(started), _utc(ended), _utc(last),
                    meter_sku, meter_month, month_amount or 0, name=name or "")
            for (period_id, project, tier, started, ended, owner, last, meter_sku,
                 meter_month, month_amount, name) in database.execute(rows)]


register_meter(BACKUP_TIER, _backup_tiers)


def backup_gb_month_price() -> int:
    """What keeping one GB of backup costs a month (BILLING_BACKUP_GB_MONTH, minor units)."""
    return settings.get(config.active(), "BILLING_BACKUP_GB_MONTH")


TEMPLATE, TEMPLATE_SKU = "template", "template-gb"
TEMPLATE_METERED = ("creating", "available", "deleting", "deleted")


def _templates(now: dt.datetime) -> list[Subject]:
    """Templates kept in the store (available, or being made), until deleted, by their
    archive's size in GiB rounded up; failed ones keep nothing (size_gb 0)."""
    meter = UsageMeter.alias()
    price = template_gb_month_price()
    rows = (Template.select(Template.id, Template.project, Template.created_at,
                            Template.deleted_at, Template.size_gb, Project.created_by,
                            meter.last_hour, meter.sku, meter.month, meter.month_amount,
                            Template.name)
            .join(Project, on=(Template.project == Project.id))
            .switch(Template).join(meter, JOIN.LEFT_OUTER,
                                   on=((meter.subject_id == Template.id)
                                       & (meter.resource == TEMPLATE)))
            .where(Template.status.in_(TEMPLATE_METERED),
                   meter.closed.is_null() | (meter.closed == False)))  # noqa: E712
    return [Subject(template_id, TEMPLATE, owner, project, TEMPLATE_SKU, price, None, size,
                    _utc(created), _utc(deleted), _utc(last), meter_sku, meter_month,
                    month_amount or 0, monthly_price=price, name=name or "")
            for (template_id, project, created, deleted, size, owner, last, meter_sku,
                 meter_month, month_amount, name) in database.execute(rows)]


register_meter(TEMPLATE, _templates)


def template_gb_month_price() -> int:
    """What keeping one GB of template costs a month (BILLING_TEMPLATE_GB_MONTH, or the
    backup price when it is empty)."""
    value = settings.get(config.active(), "BILLING_TEMPLATE_GB_MONTH")
    return int(value) if str(value).strip() else backup_gb_month_price()


def usage_note(subject: Subject, hour: dt.datetime) -> str:
    """The ledger note of a usage debit: what was metered, by name, its SKU and hour
    ("instance web-1 (small) 2025-03-10T12:00:00Z"); the name is the one at the time."""
    what = f"{subject.resource} {subject.name} ({subject.sku})" if subject.name else (
        f"{subject.resource} {subject.subject_id} ({subject.sku})")
    return f"{what} {clock.isoformat(hour)}"


def hours_in_month(hour: dt.datetime) -> int:
    start = hour.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (start + dt.timedelta(days=32)).replace(day=1)
    return round((following - start) / HOUR)


def hourly_rate(user_id: str, now: dt.datetime | None = None) -> float:
    """What the account's metered things cost an hour as they are now, in minor units.

    The sum of the hourly price of each live instance of the projects it owns (stopped
    ones too: metering bills them), less what the plan's monthly cap leaves of it this
    month, and of each kept backup's hourly share of its GB-month price. The run-out
    estimate divides the balance by it; it reads no history, so an instance started a
    minute ago counts in full and a deleted one not at all.
    """
    current = hour_of(now or clock.now())
    month = month_of(current)
    meter = UsageMeter.alias()
    instances = (Instance.select(Plan.slug, Plan.price_hourly, Plan.price_monthly_cap,
                                 meter.sku, meter.month, meter.month_amount)
                 .join(Plan, on=(Instance.plan == Plan.id))
                 .switch(Instance).join(Project, on=(Instance.project == Project.id))
                 .switch(Instance).join(meter, JOIN.LEFT_OUTER,
                                        on=((meter.subject_id == Instance.id)
                                            & (meter.resource == INSTANCE)))
                 .where(Project.created_by == user_id, Instance.deleted_at.is_null())
                 .tuples())
    rate = 0.0
    for slug, price, cap, meter_sku, meter_month, month_amount in instances:
        spent = (month_amount or 0) if (meter_sku, meter_month) == (slug, month) else 0
        rate += price if cap is None else max(0, min(price, cap - spent))
    kept_gb = (Backup.select(fn.COALESCE(fn.SUM(Backup.size_gb), 0))
               .join(Project, on=(Backup.project == Project.id))
               .where(Project.created_by == user_id, Backup.deleted_at.is_null(),
                      Backup.status.in_(BACKUP_METERED)).scalar())
    template_gb = (Template.select(fn.COALESCE(fn.SUM(Template.size_gb), 0))
                   .join(Project, on=(Template.project == Project.id))
                   .where(Project.created_by == user_id, Template.deleted_at.is_null(),
                          Template.status.in_(TEMPLATE_METERED)).scalar())
    tiers = (Instance.select(Instance.backup_tier)
             .join(Project, on=(Instance.project == Project.id))
             .where(Project.created_by == user_id, Instance.deleted_at.is_null(),
                    Instance.backup_tier.in_(tuple(TIER_PRICES))).tuples())
    rate += sum(tier_hourly_price(tier) for (tier,) in tiers)
    return rate + (backup_gb_month_price() * kept_gb + template_gb_month_price()
                   * template_gb) / hours_in_month(current)


@dataclass(frozen=True)
class TickResult:
    records: int
    amount: int
    subjects: int


def tick(now: dt.datetime | None = None) -> TickResult:
    """Record every started hour not recorded yet, up to `now` (default: the clock).

    Idempotent: run it as often as you like; it only adds what is missing.
    """
    now = now or clock.now()
    current = hour_of(now)
    with ledger.durable():
        subjects = [s for collect in _meters.values() for s in collect(now)]
        records, meters = [], []
        for subject in subjects:
            made, closed = _hours(subject, current)
            records += made
            if made or closed:
                meters.append((subject, closed))
        if not meters:
            return TickResult(0, 0, len(subjects))
        _write(records, meters, now)
    total = sum(record[-1] for record in records)
    if records:
        log.info("metering: %s hour(s) recorded, %s charged", len(records), total)
    return TickResult(len(records), total, len(subjects))


def _hours(subject: Subject, current: dt.datetime) -> tuple[list[tuple], bool]:
    """The records (subject, hour, amount) still missing, and whether the subject is done."""
    first = hour_of(subject.start) if subject.last_hour is None else subject.last_hour + HOUR
    last, closed = current, False
    if subject.end is not None:
        # Hours that started before the deletion; once those are in, the meter is closed.
        final = hour_of(subject.end - dt.timedelta(microseconds=1))
        last, closed = min(current, final), final <= current
    made = []
    month, month_amount = subject.meter_month, subject.month_amount
    if subject.meter_sku is not None and subject.meter_sku != subject.sku:
        month = None  # another plan: its own monthly sum, looked up below when needed
    hour = first
    while hour <= last:
        this_month = month_of(hour)
        if this_month != month:
            month = this_month
            month_amount = (_month_sum(subject, hour) if subject.last_hour is not None
                            and this_month == month_of(subject.last_hour) else 0)
        if subject.monthly_price is not None:
            amount = _pro_rata(subject.monthly_price * subject.quantity, hour)
        else:
            amount = subject.unit_price * subject.quantity
        if subject.monthly_cap is not None:
            amount = max(0, min(amount, subject.monthly_cap - month_amount))
        month_amount += amount
        made.append((subject, hour, amount))
        hour += HOUR
    if made:
        subject.last_hour, subject.meter_month, subject.month_amount = made[-1][1], month, \
            month_amount
    return made, closed


def _pro_rata(monthly: int, hour: dt.datetime) -> int:
    """Hour `hour`'s share of `monthly`: the shares of a month's hours add up to it."""
    start = hour.replace(day=1, hour=0)
    hours = hours_in_month(hour)
    index = round((hour - start) / HOUR)
    return monthly * (index + 1) // hours - monthly * index // hours


def _month_sum(subject: Subject, hour: dt.datetime) -> int:
    """What (subject, SKU) was charged this month before - after a plan change back."""
    start = hour.replace(day=1, hour=0)
    return (UsageRecord.select(fn.COALESCE(fn.SUM(UsageRecord.amount), 0))
            .where(UsageRecord.subject_id == subject.subject_id,
                   UsageRecord.resource == subject.resource, UsageRecord.sku == subject.sku,
                   UsageRecord.hour >= start, UsageRecord.hour < hour).scalar())


def _write(records: list[tuple], meters: list[tuple[Subject, bool]], now: dt.datetime) -> None:
    cursor = database.cursor()
    created = db_time(now)
    usage_rows, postings = [], []
    # (user, project, day, resource, sku) -> [quantity, amount]
    daily: defaultdict[tuple[str, str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for subject, hour, amount in records:
        stamp = db_time(hour)
        usage_rows.append((subject.user_id, subject.project_id, subject.subject_id,
                           subject.name[:64], subject.resource, subject.sku, stamp,
                           subject.quantity, subject.unit_price, amount, created))
        totals = daily[(subject.user_id, subject.project_id, hour.date().isoformat(),
                        subject.resource, subject.sku)]
        totals[0] += subject.quantity
        totals[1] += amount
        if amount:
            postings.append(ledger.Posting(
                subject.user_id, "usage", -amount,
                f"usage:{subject.subject_id}:{clock.isoformat(hour)}",
                note=usage_note(subject, hour),
                project_id=subject.project_id))
    # A duplicate (subject, resource, hour) fails here and rolls back the whole tick.
    cursor.executemany(insert_statement(
        "usage_record", ("user_id", "project_id", "subject_id", "subject_name", "resource",
                         "sku", "hour", "quantity", "unit_price", "amount", "created_at")),
        usage_rows)
    cursor.executemany(insert_statement(
        "usage_daily", ("user_id", "project_id", "day", "resource", "sku", "quantity",
                        "amount"),
        'ON CONFLICT ("user_id", "day", "project_id", "resource", "sku") DO UPDATE SET '
        '"quantity" = "usage_daily"."quantity" + excluded."quantity", '
        '"amount" = "usage_daily"."amount" + excluded."amount"'),
        [(*key, quantity, amount) for key, (quantity, amount) in daily.items()])
    cursor.executemany(insert_statement(
        "usage_meter", ("subject_id", "resource", "last_hour", "sku", "month", "month_amount",
                        "closed"),
        'ON CONFLICT ("subject_id", "resource") DO UPDATE SET '
        '"last_hour" = excluded."last_hour", "sku" = excluded."sku", '
        '"month" = excluded."month", "month_amount" = excluded."month_amount", '
        '"closed" = excluded."closed"'),
        [(s.subject_id, s.resource, db_time(s.last_hour or hour_of(s.start)),
          s.sku, s.meter_month or month_of(hour_of(s.start)), s.month_amount, closed)
         for s, closed in meters])
    ledger.post_many(postings)
