"""Hourly metering: every started hour once, capped per month, debited to the owner."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from peewee import fn

from appliance.db import database
from appliance.models import LedgerEntry, UsageDaily, UsageRecord
from appliance.services import clock
from appliance.services.billing import ledger, metering
from tests.factories import (
    T0,
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_plan,
)

H = dt.timedelta(hours=1)


@pytest.fixture
def world(app, owner_user):
    clock.freeze(T0)
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        yield {"node": node, "image": image, "project": default_project_of(owner_user.id),
               "owner": owner_user}


def _instance(world, plan, **kwargs):
    return make_instance(world["project"], plan, world["node"], world["image"], **kwargs)


def _hours(instance_id):
    return [r.hour for r in UsageRecord.select().where(UsageRecord.subject_id == instance_id)
            .order_by(UsageRecord.hour)]


def test_each_started_hour_is_recorded_once_and_debited(world):
    plan = make_plan(price=100)
    instance = _instance(world, plan)
    assert metering.tick().records == 1  # the hour it was created in has started
    assert metering.tick().records == 0
    clock.advance(3 * H)
    assert metering.tick().records == 3
    assert metering.tick().records == 0
    assert _hours(instance.id) == [T0.replace(minute=0) + n * H for n in range(4)]
    owner = world["owner"].id
    assert ledger.balance(owner) == -400 == ledger.recomputed_balance(owner)
    refs = [e.reference for e in LedgerEntry.select().order_by(LedgerEntry.id)]
    assert refs[0] == f"usage:{instance.id}:2025-03-10T12:00:00Z"
    record = UsageRecord.get(UsageRecord.subject_id == instance.id, UsageRecord.hour == T0.replace(
        minute=0))
    assert (record.resource, record.sku, record.quantity, record.amount, record.user_id,
            record.project_id) == ("instance", "std", 1, 100, owner, world["project"].id)


def test_a_downtime_is_caught_up_by_the_next_tick(world):
    instance = _instance(world, make_plan(price=7))
    metering.tick()
    clock.advance(26 * H)
    assert metering.tick().records == 26
    assert len(_hours(instance.id)) == 27
    assert ledger.balance(world["owner"].id) == -7 * 27


def test_a_stopped_instance_is_metered_and_a_deleted_one_stops(world):
    plan = make_plan(price=10)
    stopped = _instance(world, plan, status="stopped")
    gone = _instance(world, plan)
    clock.advance(2 * H)
    delete_instance(gone, T0 + 2 * H)  # deleted at 14:30: hours 12, 13, 14 started before
    clock.advance(5 * H)
    metering.tick()
    assert len(_hours(stopped.id)) == 8
    assert len(_hours(gone.id)) == 3
    clock.advance(2 * H)
    metering.tick()
    assert len(_hours(gone.id)) == 3


def test_the_monthly_cap_holds_and_a_new_month_starts_again(world):
    plan = make_plan(price=100, cap=250)
    clock.freeze(dt.datetime(2025, 3, 31, 21, 15, tzinfo=dt.UTC))
    instance = _instance(world, plan)
    clock.advance(4 * H)  # 21, 22, 23 in March; 00, 01 in April
    metering.tick()
    amounts = [r.amount for r in UsageRecord.select().where(
        UsageRecord.subject_id == instance.id).order_by(UsageRecord.hour)]
    assert amounts == [100, 100, 50, 100, 100]
    clock.advance(2 * H)  # capped per tick as per catch-up
    metering.tick()
    april = (UsageRecord.select(fn.SUM(UsageRecord.amount))
             .where(UsageRecord.subject_id == instance.id,
                    UsageRecord.hour >= dt.datetime(2025, 4, 1, tzinfo=dt.UTC)).scalar())
    assert april == 250
    # Zero-amount hours are recorded but move no credit.
    assert LedgerEntry.select().count() == 6
    assert ledger.balance(world["owner"].id) == -500


def test_the_daily_rollup_matches_the_records(world):
    a = _instance(world, make_plan("a", price=3))
    _instance(world, make_plan("b", price=5))
    clock.advance(30 * H)
    metering.tick()
    clock.advance(5 * H)
    metering.tick()
    delete_instance(a, clock.now())
    clock.advance(H)
    metering.tick()
    by_day = {(r.day, r.sku): (r.quantity, r.amount) for r in UsageDaily.select()}
    expected: dict = {}
    for r in UsageRecord.select():
        key = (r.hour.date().isoformat(), r.sku)
        quantity, amount = expected.get(key, (0, 0))
        expected[key] = (quantity + r.quantity, amount + r.amount)
    assert by_day == expected


def test_two_ticks_at_once_count_each_hour_once(app, world):
    plan = make_plan(price=1)
    for _ in range(200):
        _instance(world, plan)
    clock.advance(10 * H)
    errors = []

    def run():
        try:
            with app.app_context(), database.connection_context():
                metering.tick()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert UsageRecord.select().count() == 200 * 11
    assert ledger.balance(world["owner"].id) == -200 * 11 == ledger.recomputed_balance(
        world["owner"].id)


def test_backups_are_charged_per_gb_month_pro_rata_by_the_hour(world):
    """A 10 GB backup at 5 per GB-month (the default BILLING_BACKUP_GB_MONTH): a whole
    month costs 50 exactly, a partial one its share; once deleted its meter closes."""
    from appliance.models import Backup

    start = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)  # February 2026: 672 hours
    clock.freeze(start)
    instance = _instance(world, make_plan(price=0, cap=0))
    backup = Backup.create(id="bak_0001", project=world["project"], instance=instance,
                           instance_name="web", node=world["node"], kind="final",
                           status="available", size_gb=10, created_at=start,
                           updated_at=start)
    clock.freeze(dt.datetime(2026, 3, 1, tzinfo=dt.UTC) - H)  # February's last hour
    metering.tick()
    charged = (UsageRecord.select(fn.SUM(UsageRecord.amount), fn.COUNT(UsageRecord.id))
               .where(UsageRecord.subject_id == backup.id).tuples().first())
    assert charged == (50, 672)
    # Half of March (744 hours), then deleted: half of the month's 50, and no more.
    gone = dt.datetime(2026, 3, 16, 12, tzinfo=dt.UTC)
    Backup.update(status="deleted", deleted_at=gone).where(Backup.id == backup.id).execute()
    clock.freeze(dt.datetime(2026, 4, 2, tzinfo=dt.UTC))
    metering.tick()
    march = (UsageRecord.select(fn.SUM(UsageRecord.amount))
             .where(UsageRecord.subject_id == backup.id,
                    UsageRecord.hour >= dt.datetime(2026, 3, 1, tzinfo=dt.UTC)).scalar())
    assert march == 50 * 372 // 744 == 25
    assert metering.tick().records == 0
    owner = world["owner"].id
    assert ledger.balance(owner) == -75 == ledger.recomputed_balance(owner)
