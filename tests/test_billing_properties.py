"""Property tests: random sequences of grants, promo redemptions, usage hours, repeated
ticks, adjustments and refunds keep the ledger consistent and charge no hour twice."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peewee import fn

from appliance import create_app
from appliance.db import database
from appliance.errors import ApplianceError
from appliance.models import LedgerEntry, UsageDaily, UsageRecord, User
from appliance.services import clock
from appliance.services.accounts import users
from appliance.services.billing import ledger, metering, promo
from appliance.services.ids import new_id
from appliance.services.principal import Principal
from tests.factories import (
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_plan,
)

START = dt.datetime(2025, 1, 30, 22, 10, tzinfo=dt.UTC)

steps = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.integers(0, 1), st.integers(1, 5000)),
    st.tuples(st.just("adjust"), st.integers(0, 1), st.integers(-5000, 5000)),
    st.tuples(st.just("refund"), st.integers(0, 1), st.integers(1, 500)),
    st.tuples(st.just("promo"), st.integers(0, 1), st.integers(0, 2)),
    st.tuples(st.just("instance"), st.integers(0, 1), st.integers(0, 1)),
    st.tuples(st.just("delete"), st.integers(0, 1), st.integers(0, 5)),
    st.tuples(st.just("hours"), st.integers(0, 1), st.integers(1, 80)),
    st.tuples(st.just("tick"), st.integers(0, 1), st.integers(0, 1)),
), min_size=1, max_size=40)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app({"DATA_DIR": str(tmp_path_factory.mktemp("data"))})


def _state(user_ids):
    return {user_id: ledger.balance(user_id) for user_id in user_ids}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=steps)
def test_the_ledger_always_adds_up_and_no_hour_is_charged_twice(app, script):
    clock.freeze(START)
    with app.app_context(), database.connection_context():
        made = [users.create_user(f"{new_id('p')}@example.test", "correct horse battery",
                                      "", verified=True) for _ in range(2)]
        ids = [u.id for u in made]
        node = make_node()
        image = make_image(node)
        plans = [make_plan(new_id("a")[2:], price=70, cap=2000),
                 make_plan(new_id("b")[2:], price=13, cap=10**6)]
        codes = []
        for amount in (100, 250, 1000):
            code = new_id("c")
            promo.PromoCode.create(id=new_id("prm"), code=code, amount=amount, max_uses=3,
                                   created_at=clock.now(), updated_at=clock.now())
            codes.append(code)
        instances = []
        for action, who, value in script:
            before = _state(ids)
            moved = False
            if action == "grant":
                ledger.post(ids[who], "grant", value, f"grant:{new_id('g')}")
                moved = True
            elif action == "adjust" and value:
                ledger.post(ids[who], "adjustment", value, f"adjustment:{new_id('g')}")
                moved = True
            elif action == "refund":
                ledger.post(ids[who], "refund", value, f"refund:{new_id('g')}")
                moved = True
            elif action == "promo":
                try:
                    promo.redeem(Principal(User.get_by_id(ids[who]), None, "token"),
                                 codes[value].upper())
                    moved = True
                except ApplianceError as exc:
                    assert exc.code in ("promo_already_redeemed", "promo_used_up")
            elif action == "instance":
                instances.append(make_instance(default_project_of(ids[who]), plans[value],
                                               node, image))
            elif action == "delete" and instances:
                delete_instance(instances.pop(value % len(instances)), clock.now())
            elif action == "hours":
                clock.advance(dt.timedelta(minutes=value * 37))
            elif action == "tick":
                metering.tick()
                moved = None  # usage moves balances, checked below
            if moved is False:
                assert _state(ids) == before, "a balance changed without an entry"
        metering.tick()
        metering.tick()
        _check_invariants(ids)
    clock.reset()


def _check_invariants(ids):
    for user_id in ids:
        entries = list(LedgerEntry.select().where(LedgerEntry.user == user_id)
                       .order_by(LedgerEntry.id))
        running = 0
        for entry in entries:
            running += entry.amount
            assert entry.balance_after == running  # the chain is consistent
        assert ledger.balance(user_id) == running == ledger.recomputed_balance(user_id)
        usage = sum(e.amount for e in entries if e.type == "usage")
        charged = (UsageRecord.select(fn.COALESCE(fn.SUM(UsageRecord.amount), 0))
                   .where(UsageRecord.user == user_id).scalar())
        assert usage == -charged
    # No hour twice; every hour between creation and now (or deletion) is there.
    hours = defaultdict(list)
    for record in UsageRecord.select():
        hours[record.subject_id].append(record.hour)
    for subject, seen in hours.items():
        assert len(seen) == len(set(seen)), f"{subject} has an hour twice"
        seen.sort()
        assert all(b - a == dt.timedelta(hours=1) for a, b in zip(seen, seen[1:], strict=False))
    # The monthly cap holds per instance, plan and month.
    per_month = defaultdict(int)
    caps = {}
    for record in UsageRecord.select().where(UsageRecord.resource == "instance"):
        per_month[(record.subject_id, record.sku, record.hour.strftime("%Y-%m"))] += \
            record.amount
    for plan in metering.Plan.select():
        caps[plan.slug] = plan.price_monthly_cap
    for (_, sku, _), total in per_month.items():
        assert total <= caps[sku]
    # The daily rollup is the sum of the records.
    rolled = UsageDaily.select(fn.SUM(UsageDaily.amount)).scalar() or 0
    assert rolled == (UsageRecord.select(fn.SUM(UsageRecord.amount)).scalar() or 0)
