"""Scheduled backup tiers on the simulated engine, with the clock moved: the tier over
the API, daily backups at each instance's slot of BACKUP_TIER_HOUR, pruning at expiry,
the extended tier's weeklies, the one-job-per-instance rule, the backups limit, the
slots of 100 instances spread over the hour, and the tier's price metered by the hour
onto its own invoice line.

A scheduled backup that restores on real Incus is in tests/test_backups_engines.py.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from appliance.db import database
from appliance.models import Backup, Event, Instance, Job, LimitOverride, UsageRecord
from appliance.scheduler import run_task
from appliance.services import clock, settings
from appliance.services.billing import invoices, metering
from appliance.services.instances import backup_tiers, jobs
from tests.factories import (
    api,
    create_instance,
    default_project_of,
    make_image,
    make_instance,
    make_node,
    make_plan,
    run_jobs,
    signed_in,
)

START = dt.datetime(2026, 2, 1, 0, 0, tzinfo=dt.UTC)  # a Sunday; BACKUP_TIER_HOUR is 3
STEP = dt.timedelta(minutes=10)


@pytest.fixture(autouse=True)
def frozen():
    clock.freeze(START)  # before anyone signs in: their tokens are of this time


@pytest.fixture
def started(frozen, app, client, owner, owner_project, catalog):  # noqa: PLR0917 - fixtures
    instance = create_instance(app, client, owner, owner_project, catalog)
    return instance


def put_tier(client, headers, project, instance_id, tier):
    return api(client, "PUT", f"/projects/{project}/instances/{instance_id}/backup-tier",
               headers, json={"tier": tier})


def tick(app) -> None:
    run_task(app, "scheduled_backups")
    run_jobs(app)


def run_until(app, until: dt.datetime, step: dt.timedelta = STEP) -> None:
    while clock.now() < until:
        clock.advance(step)
        tick(app)


def scheduled(app, instance_id: str, *, kept: bool = True) -> list[Backup]:
    with app.app_context():
        query = Backup.select().where(Backup.instance == instance_id,
                                      Backup.kind == "scheduled")
        if kept:
            query = query.where(Backup.deleted_at.is_null())
        return list(query.order_by(Backup.created_at))


def store(app) -> Path:
    return Path(app.config["APPLIANCE"]["BACKUP_DIR"])


def test_the_tier_is_put_shown_and_checked(frozen, app, client, owner, owner_project,  # noqa: PLR0917
                                           started, outsider):
    instance_id = started["id"]
    base = f"/projects/{owner_project}/instances/{instance_id}"
    assert api(client, "GET", base, owner).get_json()["backup_tier"] == "none"
    response = put_tier(client, owner, owner_project, instance_id, "extended")
    assert response.status_code == 204, response.get_json()
    assert api(client, "GET", base, owner).get_json()["backup_tier"] == "extended"
    assert put_tier(client, owner, owner_project, instance_id, "extended").status_code == 204
    bad = put_tier(client, owner, owner_project, instance_id, "gold")
    assert bad.status_code == 400, bad.get_json()
    assert "tier" in str(bad.get_json()["error"]), bad.get_json()
    assert put_tier(client, outsider, owner_project, instance_id, "basic").status_code == 404
    assert put_tier(client, owner, owner_project, "ins_nope", "basic").status_code == 404
    assert put_tier(client, owner, owner_project, instance_id, "none").status_code == 204
    assert api(client, "GET", base, owner).get_json()["backup_tier"] == "none"
    with app.app_context():
        from appliance.models import BackupTierPeriod
        periods = list(BackupTierPeriod.select().where(BackupTierPeriod.instance == instance_id))
    assert [(p.tier, p.ended_at is not None) for p in periods] == [("extended", True)]


def test_basic_takes_a_daily_backup_at_the_slot_and_the_eighth_day_prunes_to_seven(
        app, client, owner, owner_project, started):
    instance_id = started["id"]
    assert put_tier(client, owner, owner_project, instance_id, "basic").status_code == 204
    with app.app_context():
        first_due = backup_tiers.due_at(instance_id, START.date())
    assert first_due.hour == 3  # the default BACKUP_TIER_HOUR
    # Just before the slot: nothing; at it: the day's backup.
    clock.freeze(first_due - dt.timedelta(seconds=1))
    tick(app)
    assert scheduled(app, instance_id) == []
    clock.freeze(first_due)
    tick(app)
    [first] = scheduled(app, instance_id)
    assert (first.status, first.created_at, first.weekly) == ("available", first_due, False)
    assert first.expires_at == first_due + dt.timedelta(days=7)
    assert (store(app) / first.archive).is_file()
    # Seven more days in steps of ten minutes: one backup a day, each in its slot's step.
    run_until(app, first_due + dt.timedelta(days=7, minutes=5))
    taken = scheduled(app, instance_id, kept=False)
    assert len(taken) == 8
    for day, backup in enumerate(taken):
        due = first_due + dt.timedelta(days=day)
        assert due <= backup.created_at < due + STEP, (day, backup.created_at)
    kept = scheduled(app, instance_id)
    assert len(kept) == 7 and [b.id for b in kept] == [b.id for b in taken[1:]]
    pruned = taken[0]
    with app.app_context():
        pruned = Backup.get_by_id(pruned.id)
    assert (pruned.status, pruned.deleted_at is not None) == ("deleted", True)
    assert not (store(app) / pruned.archive).exists()
    # Events reuse backup.created (and backup.deleted for the prune).
    with app.app_context():
        created = Event.select().where(Event.type == "backup.created").count()
        deleted = Event.select().where(Event.type == "backup.deleted").count()
    assert (created, deleted) == (8, 1)
    # The instance's backups over the API show the expiry.
    headers = signed_in(client, "owner@example.test")
    listed = api(client, "GET", f"/projects/{owner_project}/instances/{instance_id}/backups",
                 headers).get_json()["data"]
    assert [b["kind"] for b in listed] == ["scheduled"] * 7
    assert all(b["expires_at"] for b in listed)


def test_extended_keeps_the_first_backup_of_each_week_for_eight_weeks(
        app, client, owner, owner_project, started):
    instance_id = started["id"]
    assert put_tier(client, owner, owner_project, instance_id, "extended").status_code == 204
    end = START + dt.timedelta(days=30, hours=12)
    run_until(app, end, dt.timedelta(hours=1))
    taken = scheduled(app, instance_id, kept=False)
    assert len(taken) == 31  # Feb 1 .. Mar 3
    # Reckoned here: the first backup of each ISO week is a weekly.
    weeks_seen: set[tuple[int, int]] = set()
    expected_weekly = []
    for backup in taken:
        week = backup.created_at.isocalendar()[:2]
        expected_weekly.append(week not in weeks_seen)
        weeks_seen.add(week)
    assert [b.weekly for b in taken] == expected_weekly
    assert sum(expected_weekly) == 6  # Feb 1 is a Sunday: its own week, then 5 Mondays
    for backup in taken:
        with app.app_context():
            due = backup_tiers.due_at(instance_id, backup.created_at.date())
        keep = dt.timedelta(weeks=8) if backup.weekly else dt.timedelta(days=14)
        assert backup.expires_at == due + keep
        assert due <= backup.created_at < due + dt.timedelta(hours=1)
    kept = scheduled(app, instance_id)
    assert {b.id for b in kept} == {b.id for b in taken if b.expires_at > end}
    recent = [b for b in kept if b.created_at >= end - dt.timedelta(days=14)]
    old = [b for b in kept if b.created_at < end - dt.timedelta(days=14)]
    assert len(recent) == 14  # the dailies of Feb 18 .. Mar 3
    # Older than the dailies' 14 days, only the weeklies stay: Feb 1, 2, 9 and 16.
    assert [b.created_at.day for b in old] == [1, 2, 9, 16] and all(b.weekly for b in old)


def test_a_due_backup_waits_while_the_instance_has_a_job(app, client, owner, owner_project,
                                                         started):
    instance_id = started["id"]
    assert put_tier(client, owner, owner_project, instance_id, "basic").status_code == 204
    with app.app_context():
        due = backup_tiers.due_at(instance_id, START.date())
        job = jobs.enqueue("instance.stop", project_id=owner_project, instance_id=instance_id)
    clock.freeze(due + dt.timedelta(minutes=1))
    with app.app_context():
        result = backup_tiers.run()
    assert (result.queued, result.waiting) == (0, 1)
    assert scheduled(app, instance_id) == []
    with app.app_context():
        Job.update(status="succeeded").where(Job.id == job.id).execute()
        assert backup_tiers.run().queued == 1
        assert backup_tiers.run().queued == 0  # today's is queued: not twice


def test_at_the_backups_limit_the_oldest_scheduled_is_pruned_else_the_day_is_skipped(  # noqa: PLR0917
        app, client, owner, owner_project, owner_user, started):
    instance_id = started["id"]
    assert put_tier(client, owner, owner_project, instance_id, "basic").status_code == 204
    with app.app_context():
        LimitOverride.create(user=owner_user.id, resource="backups", value=3,
                             updated_at=clock.now())
    run_until(app, START + dt.timedelta(days=4, hours=6), dt.timedelta(hours=1))
    taken = scheduled(app, instance_id, kept=False)
    kept = scheduled(app, instance_id)
    assert len(taken) == 5 and [b.id for b in kept] == [b.id for b in taken[2:]]
    # The limit filled by backups not of this instance (as another's): none to prune.
    with app.app_context():
        for backup in kept:
            Backup.update(instance=None).where(Backup.id == backup.id).execute()
    # The next run (the same day: today's backup is no longer this instance's) and the
    # next day's: a failed row each says why, and the limit holds.
    run_until(app, START + dt.timedelta(days=5, hours=6), dt.timedelta(hours=1))
    found = scheduled(app, instance_id)
    assert [b.created_at.day for b in found] == [5, 6]
    assert all(b.status == "failed" and "backups limit (3)" in b.error for b in found)
    with app.app_context():
        kept_count = Backup.select().where(Backup.deleted_at.is_null(),
                                           Backup.status != "failed").count()
        failed = Event.select().where(Event.type == "backup.failed").count()
    assert (kept_count, failed) == (3, 2)


def test_slots_of_a_hundred_instances_spread_over_the_hour(frozen, app, owner_user):
    with app.app_context(), database.connection_context():
        LimitOverride.create(user=owner_user.id, resource="backups", value=1000,
                             updated_at=clock.now())
        node, plan = make_node(), make_plan(price=0, cap=0)
        image, project = make_image(node), default_project_of(owner_user.id)
        rows = [make_instance(project, plan, node, image) for _ in range(100)]
        Instance.update(backup_tier="basic").execute()
        slots = [backup_tiers.slot(row.id) for row in rows]
        # Ten-minute buckets of the hour: each holds some, none most.
        buckets = Counter(s // 600 for s in slots)
        assert len(buckets) == 6 and max(buckets.values()) <= 32
        # At 03:10 only those whose slot has passed are queued.
        clock.freeze(START.replace(hour=3, minute=10))
        result = backup_tiers.run()
        assert result.queued == sum(1 for s in slots if s <= 600) < 50
        clock.freeze(START.replace(hour=4))
        assert backup_tiers.run().queued == 100 - result.queued


def test_the_tier_is_charged_by_the_hour_on_its_own_invoice_line(app, client,
                                                                   owner_project, started):
    instance_id = started["id"]
    with app.app_context():
        settings.put("BILLING_BACKUP_TIER_BASIC_HOURLY", "3")
    clock.freeze(START + dt.timedelta(hours=10, minutes=20))
    headers = signed_in(client, "owner@example.test")
    assert put_tier(client, headers, owner_project, instance_id, "basic").status_code == 204
    clock.freeze(START + dt.timedelta(days=2, hours=10, minutes=5))  # 49 started hours
    with app.app_context():
        metering.tick()
        records = list(UsageRecord.select().where(UsageRecord.resource == "backup_tier"))
    assert len(records) == 49 and {r.amount for r in records} == {3}
    assert {r.sku for r in records} == {"backup-tier-basic"}
    headers = signed_in(client, "owner@example.test")
    assert put_tier(client, headers, owner_project, instance_id, "none").status_code == 204
    clock.freeze(dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC))
    with app.app_context():
        invoices.generate_due()
    headers = signed_in(client, "owner@example.test")
    [invoice] = api(client, "GET", "/billing/invoices", headers).get_json()["data"]
    body = api(client, "GET", f"/billing/invoices/{invoice['id']}", headers).get_json()
    lines = [line for line in body["lines"] if line["resource"] == "backup_tier"]
    assert [(line["sku"], line["hours"], line["unit_price"], line["amount"])
            for line in lines] == [("backup-tier-basic", 49, 3, 147)]
    assert "basic tier" in lines[0]["description"]
    assert any(line["resource"] == "instance" for line in body["lines"])
