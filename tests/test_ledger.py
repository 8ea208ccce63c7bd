"""The credit ledger: append-only, one posting per reference, balances re-derivable."""

from __future__ import annotations

import pytest
from peewee import IntegrityError

from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import BillingAlert, LedgerEntry
from appliance.services.billing import ledger
from tests.factories import make_user


@pytest.fixture
def user(app):
    return make_user(app)


@pytest.fixture
def ctx(app, user):
    with app.app_context(), database.connection_context():
        yield app


def test_a_posting_moves_the_balance_and_a_repeated_reference_moves_nothing(user, ctx):
    first = ledger.post(user.id, "grant", 1000, "grant:1", note="welcome")
    assert (first.is_new, first.balance_after) == (True, 1000)
    again = ledger.post(user.id, "grant", 1000, "grant:1", note="welcome")
    assert (again.is_new, again.id) == (False, first.id)
    ledger.post(user.id, "usage", -250, "usage:ins_x:2024-01-01T00:00:00Z")
    assert ledger.balance(user.id) == 750 == ledger.recomputed_balance(user.id)
    assert LedgerEntry.select().count() == 2


def test_the_database_refuses_to_update_or_delete_a_ledger_row(user, ctx):
    entry = ledger.post(user.id, "grant", 500, "grant:2")
    with pytest.raises(IntegrityError, match="append-only"):
        LedgerEntry.update(amount=5000).where(LedgerEntry.id == entry.id).execute()
    with pytest.raises(IntegrityError, match="append-only"):
        LedgerEntry.delete().where(LedgerEntry.id == entry.id).execute()
    with pytest.raises(IntegrityError, match="append-only"):
        database.execute_sql("DELETE FROM ledger_entry")
    assert LedgerEntry.get_by_id(entry.id).amount == 500


@pytest.mark.parametrize("kind, amount, field", [
    ("grant", 0, "amount"), ("grant", 10**12, "amount"), ("grant", True, "amount"),
    ("bonus", 5, "type")])
def test_bad_postings_are_refused_naming_the_field(user, ctx, kind, amount, field):
    with pytest.raises(InvalidRequest) as caught:
        ledger.post(user.id, kind, amount, "grant:bad")
    assert caught.value.details["field"] == field
    assert LedgerEntry.select().count() == 0


def test_ledger_writes_are_full_sync_even_when_the_operator_chose_normal(make_app):
    app = make_app(SQLITE_SYNCHRONOUS="normal")
    user = make_user(app)
    with app.app_context(), database.connection_context():
        seen = []
        original = database.obj.execute_sql

        def spy(sql, *args, **kwargs):
            if sql.startswith("INSERT") and "ledger_entry" in sql:
                seen.append(original("PRAGMA synchronous").fetchone()[0])
            return original(sql, *args, **kwargs)

        database.obj.execute_sql = spy
        try:
            ledger.post(user.id, "grant", 100, "grant:sync")
        finally:
            del database.obj.execute_sql
        assert seen == [2]  # FULL while the entry was written
        assert database.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL again


def test_alerts_fire_once_below_the_threshold_and_rearm_above_it(make_app):
    app = make_app(BILLING_LOW_BALANCE_THRESHOLDS="500")
    user = make_user(app)
    with app.app_context(), database.connection_context():
        ledger.post(user.id, "grant", 1000, "grant:a")
        alert = BillingAlert.get(BillingAlert.user == user.id)
        assert (alert.threshold, alert.armed, alert.fired_at) == (500, True, None)
        ledger.post(user.id, "usage", -600, "usage:a")
        fired = BillingAlert.get_by_id(alert.id)
        assert fired.armed is False and fired.fired_at is not None
        ledger.post(user.id, "usage", -100, "usage:b")  # still below: no second firing
        assert BillingAlert.get_by_id(alert.id).fired_at == fired.fired_at
        ledger.post(user.id, "topup", 1000, "stripe:evt_1")
        assert BillingAlert.get_by_id(alert.id).armed is True


def test_the_statement_lists_every_entry_oldest_first_and_defuses_formulas(user, ctx):
    ledger.post(user.id, "grant", 100, "grant:x", note="=HYPERLINK(1)")
    ledger.post(user.id, "usage", -40, "usage:x")
    lines = "".join(ledger.statement_csv(user.id, "EUR")).splitlines()
    assert lines[0].startswith("id,created_at,type,amount,balance_after,currency")
    assert lines[1].endswith("grant,100,100,EUR,grant:x,'=HYPERLINK(1)")
    assert ",usage,-40,60,EUR," in lines[2]
