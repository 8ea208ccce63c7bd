"""Scheduled backup tiers: an instance's daily (and weekly) backups, taken and pruned by
the scheduler, paid for by the hour.

Tiers: `none`; `basic`, a daily backup kept BACKUP_TIER_BASIC_DAYS (7); `extended`, a daily
backup kept BACKUP_TIER_EXTENDED_DAYS (14), of which the first of each ISO week is marked
`weekly` and kept BACKUP_TIER_EXTENDED_WEEKS (8) weeks instead. The numbers and each tier's
hourly price (BILLING_BACKUP_TIER_*_HOURLY) are billing settings an administrator changes
at run time; a backup keeps the expiry it was given.

When: each UTC day in the hour BACKUP_TIER_HOUR, at the instance's own slot of it (a
second of the hour derived from its id, `slot()`), so a hundred instances do not start at
once. The `scheduled_backups` task (every minute) queues the backup of every instance
whose slot has passed today and that has no scheduled backup of today yet; an instance
with a job running (its one operation at a time, services/instances/jobs.py) is left
for the next run, as is one not running or stopped. An instance whose tier was chosen
after today's slot gets its first backup at the next run. The backup is an ordinary
`backup.create` job (kind `scheduled`, events backup.created / backup.failed).

Pruning: the same task deletes scheduled backups past their `expires_at` (archive gone
from the store, row marked deleted like any delete), except while a job reads one.

The account's `backups` limit counts scheduled backups. At the limit, the instance's own
oldest scheduled backup that is not a weekly is pruned to make room (then its oldest
weekly); when it has none, no backup is taken that day: a failed backup row says why
(backup.failed, a notification), and the limit is never passed.

Billing: each stretch of time an instance has a paid tier is a `backup_tier_period` row,
metered by the hour at the tier's hourly price (resource `backup_tier`, SKU
`backup-tier-basic` / `backup-tier-extended`): its own line on the invoice. Choosing
another tier ends the stretch and starts a new one; deleting the instance ends it.
Scheduled backups already taken stay until they expire, whatever the tier becomes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import dataclass

from peewee import IntegrityError

from appliance import config
from appliance.db import database
from appliance.models import Backup, BackupTierPeriod, Instance, Job, Project, User
from appliance.services import audit, clock, settings
from appliance.services.ids import new_id
from appliance.services.instances import backups, jobs, lifecycle, nodes
from appliance.services.limits import quotas
from appliance.services.principal import Principal

log = logging.getLogger("appliance.backup_tiers")

NONE, BASIC, EXTENDED = "none", "basic", "extended"
TIERS = (NONE, BASIC, EXTENDED)
PAID = (BASIC, EXTENDED)
SCOPE = "backups:write"
HOURS_PER_MONTH = 730  # the "per month" shown beside an hourly price
SLOT_SECONDS = 3600


@dataclass(frozen=True)
class Tier:
    name: str
    hourly_price: int  # minor units
    daily_days: int
    weekly_weeks: int  # 0: no weeklies

    @property
    def monthly_price(self) -> int:
        return self.hourly_price * HOURS_PER_MONTH


def _setting(name: str) -> int:
    return int(settings.get(config.active(), name))


def tier(name: str) -> Tier:
    """A tier as the settings in force have it."""
    if name == BASIC:
        return Tier(BASIC, _setting("BILLING_BACKUP_TIER_BASIC_HOURLY"),
                    _setting("BACKUP_TIER_BASIC_DAYS"), 0)
    if name == EXTENDED:
        return Tier(EXTENDED, _setting("BILLING_BACKUP_TIER_EXTENDED_HOURLY"),
                    _setting("BACKUP_TIER_EXTENDED_DAYS"),
                    _setting("BACKUP_TIER_EXTENDED_WEEKS"))
    return Tier(NONE, 0, 0, 0)


def offered() -> list[Tier]:
    """Every tier, with its prices, as the dashboard offers them."""
    return [tier(name) for name in TIERS]


def sku(name: str) -> str:
    return f"backup-tier-{name}"


def slot(instance_id: str) -> int:
    """The instance's second of the backup hour (0-3599), spread evenly by its id."""
    return int.from_bytes(hashlib.sha256(instance_id.encode()).digest()[:8], "big") % SLOT_SECONDS


def tier_hour() -> int:
    """The UTC hour the daily backups are taken in (BACKUP_TIER_HOUR)."""
    return int(config.active()["BACKUP_TIER_HOUR"])


def due_at(instance_id: str, day: dt.date) -> dt.datetime:
    """When the instance's daily backup of `day` is due."""
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return start + dt.timedelta(hours=tier_hour(), seconds=slot(instance_id))


# Choosing one ----------------------------------------------------------------------


def set_tier(principal: Principal, project_id: str, instance_id: str, name: str) -> Instance:
    """Put the instance on a tier (the same one again changes nothing). A paid tier needs
    an engine that takes backups (409 `unsupported` naming `backups`)."""
    principal.require_scope(SCOPE)
    with database.atomic():
        instance = lifecycle.changeable(principal, project_id, instance_id,
                                        allowed=("creating", "running", "stopped"),
                                        action="change the backup tier of", scope=SCOPE)
        if name == instance.backup_tier:
            return instance
        if name in PAID:
            driver = nodes.driver_for(instance.node)
            nodes.engine_call(lambda: driver.capabilities().require("backups"))
        now = clock.now()
        _end_period(instance.id, now)
        if name in PAID:
            BackupTierPeriod.create(id=new_id("btp"), instance=instance.id,
                                    project=instance.project_id, tier=name, started_at=now)
        previous = instance.backup_tier
        Instance.update(backup_tier=name, updated_at=now).where(
            Instance.id == instance.id).execute()
        lifecycle.record(instance, "backup.tier_changed",
                         f"Backup tier {previous} -> {name}, by {principal.user.email}")
        audit.record("backup.tier_change", actor=principal.user, target_type="instance",
                     target_id=instance.id, ip=principal.ip, tier=name, previous=previous)
    return Instance.get_by_id(instance.id)


def _end_period(instance_id: str, at: dt.datetime) -> None:
    BackupTierPeriod.update(ended_at=at).where(BackupTierPeriod.instance == instance_id,
                                               BackupTierPeriod.ended_at.is_null()).execute()


# The scheduler's task --------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    queued: int
    waiting: int  # due, but the instance has a job running (next run)
    skipped: int  # due, but the backups limit left no room
    pruned: int


def run(now: dt.datetime | None = None) -> RunResult:
    """Prune expired scheduled backups, then queue the due ones (idempotent)."""
    now = now or clock.now()
    pruned = prune(now)
    queued = waiting = skipped = 0
    today = now.date()
    candidates = (Instance.select().where(Instance.backup_tier.in_(PAID),
                                          Instance.deleted_at.is_null(),
                                          Instance.status.in_(("running", "stopped"))))
    for instance in candidates:
        due = due_at(instance.id, today)
        if now < due or _taken_since(instance.id, due.replace(hour=0, second=0, minute=0)):
            continue
        outcome = _queue(instance, now)
        queued += outcome == "queued"
        waiting += outcome == "waiting"
        skipped += outcome == "skipped"
    if queued:
        jobs.wake()
    if queued or pruned or skipped:
        log.info("scheduled backups: %s queued, %s waiting, %s skipped at the limit, "
                 "%s pruned", queued, waiting, skipped, pruned)
    return RunResult(queued, waiting, skipped, pruned)


def _taken_since(instance_id: str, day_start: dt.datetime) -> bool:
    return Backup.select().where(Backup.instance == instance_id, Backup.kind == backups.SCHEDULED,
                                 Backup.created_at >= day_start).exists()


def _busy(instance_id: str) -> bool:
    return Job.select().where(Job.instance == instance_id,
                              Job.status.in_(jobs.UNFINISHED)).exists()


def _queue(instance: Instance, now: dt.datetime) -> str:
    """Queue the instance's scheduled backup of today: "queued", "waiting" or "skipped"."""
    chosen = tier(instance.backup_tier)
    try:
        with database.atomic():
            if _busy(instance.id):
                return "waiting"
            owner = Project.get_by_id(instance.project_id).created_by
            if not _make_room(owner, instance.id):
                _skip(instance, owner, now)
                return "skipped"
            due = due_at(instance.id, now.date())
            weekly = chosen.weekly_weeks > 0 and not _weekly_this_week(instance.id, now)
            keep = (dt.timedelta(weeks=chosen.weekly_weeks) if weekly
                    else dt.timedelta(days=chosen.daily_days))
            backup = Backup.create(
                id=new_id("bak"), project=instance.project_id, instance=instance,
                instance_name=instance.name, name=f"{'Weekly' if weekly else 'Daily'} "
                                                  f"{now:%Y-%m-%d}",
                node=instance.node_id, kind=backups.SCHEDULED, status="creating",
                size_gb=instance.plan.disk_gb, disk_gb=instance.plan.disk_gb,
                image=instance.image_id, created_at=now, updated_at=now,
                expires_at=due + keep, weekly=weekly)
            job = jobs.enqueue("backup.create", project_id=instance.project_id,
                               instance_id=instance.id, params={"backup_id": backup.id},
                               total_steps=2, message="Backing up (scheduled)")
            lifecycle.record(instance, "backup.requested",
                             f"Scheduled backup {backup.name} ({instance.backup_tier} tier)",
                             job)
    except IntegrityError:  # a job was queued meanwhile: one operation at a time
        return "waiting"
    return "queued"


def _weekly_this_week(instance_id: str, now: dt.datetime) -> bool:
    weekday = now.isoweekday()
    monday = dt.datetime(now.year, now.month, now.day, tzinfo=dt.UTC) - dt.timedelta(
        days=weekday - 1)
    return Backup.select().where(Backup.instance == instance_id, Backup.weekly,
                                 Backup.status != "failed",
                                 Backup.created_at >= monday).exists()


def _make_room(owner: User, instance_id: str) -> bool:
    """Whether one more backup fits the owner's `backups` limit, after pruning the
    instance's oldest scheduled backups (dailies first) that are in the way."""
    over = quotas.used(owner, "backups") + 1 - quotas.limit_of(owner, "backups")
    if over <= 0:
        return True
    oldest = list(Backup.select().where(
        Backup.instance == instance_id, Backup.kind == backups.SCHEDULED,
        Backup.status == "available", Backup.deleted_at.is_null())  # counted ones only
        .order_by(Backup.weekly, Backup.created_at).limit(over))
    oldest = [row for row in oldest if not backups.users(row.id)]
    if len(oldest) < over:
        return False
    for row in oldest:
        _delete(row)
    return True


def _skip(instance: Instance, owner: User, now: dt.datetime) -> None:
    """No room: a failed backup row of today says why (backup.failed)."""
    limit = quotas.limit_of(owner, "backups")
    message = (f"Not taken: the account's backups limit ({limit}) is reached and this "
               "instance has no scheduled backup to prune. Delete a backup or ask for a "
               "higher limit.")
    backup = Backup.create(id=new_id("bak"), project=instance.project_id, instance=instance,
                           instance_name=instance.name, name=f"Daily {now:%Y-%m-%d}",
                           node=instance.node_id, kind=backups.SCHEDULED, status="failed",
                           error=message, size_gb=0, disk_gb=instance.plan.disk_gb,
                           image=instance.image_id, created_at=now, updated_at=now,
                           expires_at=now + dt.timedelta(days=1))
    backups.emit_failed(backup.id, message)


def _delete(backup: Backup) -> None:
    Backup.update(status="deleting", updated_at=clock.now()).where(
        Backup.id == backup.id).execute()
    backups.finish_delete(Backup.get_by_id(backup.id))


def prune(now: dt.datetime | None = None) -> int:
    """Delete the scheduled backups past their expiry (none a job reads)."""
    now = now or clock.now()
    expired = list(Backup.select().where(
        Backup.kind == backups.SCHEDULED, Backup.deleted_at.is_null(),
        Backup.status.in_(("available", "failed", "deleting")), Backup.expires_at <= now))
    pruned = 0
    for backup in expired:
        if backups.users(backup.id):
            continue
        try:
            with database.atomic():
                _delete(backup)
            pruned += 1
        except Exception:  # one bad archive must not stop the rest; the next run retries
            log.exception("could not prune backup %s", backup.id)
    return pruned
