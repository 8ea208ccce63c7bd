"""`billing.credited`: every new credit records one event in its posting's transaction."""

from __future__ import annotations

import pytest

from appliance.db import database
from appliance.models import Event, LedgerEntry
from appliance.services.billing import ledger
from tests.factories import api, bearer, login, make_user


@pytest.fixture
def people(app, client):
    ada = make_user(app, "ada@example.test", role="admin")
    bob = make_user(app, "bob@example.test")
    return {"admin": bearer(login(client, "ada@example.test")),
            "bob": bearer(login(client, "bob@example.test")), "bob_id": bob.id,
            "ada_id": ada.id}


def credited(client, headers) -> list[dict]:
    response = api(client, "GET", "/events", headers, query_string={"type": "billing.credited"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["data"]


def test_a_grant_emits_one_billing_credited_event_the_account_holder_sees(client, people):
    granted = api(client, "POST", "/admin/billing/credits", people["admin"],
                  json={"user_id": people["bob_id"], "amount": 2500, "note": "Welcome"})
    assert granted.status_code == 201, granted.get_json()

    [event] = credited(client, people["bob"])
    assert event["user_id"] == people["bob_id"] and event["project_id"] is None
    data = event["data"]
    assert {k: data[k] for k in ("amount", "currency", "type", "balance_after",
                                 "reference_type")} == {
        "amount": 2500, "currency": "EUR", "type": "grant", "balance_after": 2500,
        "reference_type": "grant"}
    assert credited(client, people["admin"]) == []  # the granting admin's account moved not


def test_a_repeated_reference_and_a_usage_debit_emit_nothing(app, client, people):
    with app.app_context(), database.connection_context():
        first = ledger.post(people["bob_id"], "promo", 500, "promo:SECRET-CODE:bob")
        again = ledger.post(people["bob_id"], "promo", 500, "promo:SECRET-CODE:bob")
        ledger.post(people["bob_id"], "usage", -120, "usage:ins_x:2025-01-01T00:00:00Z")
        ledger.post(people["bob_id"], "adjustment", -30, "adjustment:1")
        with ledger.durable():
            ledger.post_many([ledger.Posting(people["bob_id"], "usage", -10,
                                             "usage:ins_x:2025-01-01T01:00:00Z")])
        assert (first.is_new, again.is_new) == (True, False)
        assert LedgerEntry.select().count() == 4
        assert Event.select().where(Event.type == "billing.credited").count() == 1

    [event] = credited(client, people["bob"])
    assert event["data"]["reference_type"] == "promo"
    assert "SECRET-CODE" not in str(event)  # a promo reference holds the code


def test_a_positive_adjustment_and_a_refund_are_credits(app, people):
    with app.app_context(), database.connection_context():
        ledger.post(people["bob_id"], "adjustment", 40, "adjustment:2")
        ledger.post(people["bob_id"], "refund", 60, "refund:1")
        types = [e.type for e in Event.select().where(Event.type == "billing.credited")]
        assert len(types) == 2


def test_post_many_refuses_a_credit(app, people):
    with app.app_context(), database.connection_context(), pytest.raises(ValueError):
        with ledger.durable():
            ledger.post_many([ledger.Posting(people["bob_id"], "grant", 10, "grant:x")])
