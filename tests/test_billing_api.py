"""Usage and billing over the JSON API: the account's own numbers, promo codes, alerts,
settings, the operator's grants and codes, and enforcement (402, grace, suspension)."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from appliance.db import database
from appliance.models import BillingAccount, Instance, Job
from appliance.services import clock
from appliance.services.billing import metering, prepaid
from tests.factories import (
    T0,
    api,
    bearer,
    create_key,
    default_project,
    fake_catalog,
    key_auth,
    login,
    make_image,
    make_instance,
    make_node,
    make_plan,
    make_user,
)

H = dt.timedelta(hours=1)


@pytest.fixture
def people(app, client):
    clock.freeze(T0)
    owner = make_user(app, "owner@example.test")
    outsider = make_user(app, "outsider@example.test")
    make_user(app, "root@example.test", role="admin")
    # Keys rather than 15-minute access tokens: the tests move the clock by hours.
    everything = ["billing:read", "billing:write", "usage:read", "instances:read",
                  "instances:write", "projects:write", "keys:write"]
    found = {"owner_id": owner.id, "outsider_id": outsider.id}
    for who, email, scopes in (("owner", "owner@example.test", everything),
                               ("outsider", "outsider@example.test", everything),
                               ("admin", "root@example.test", [*everything, "admin"])):
        found[who] = key_auth(create_key(client, bearer(login(client, email)), scopes)[0])
    return found


def _grant(client, people, amount, user="owner_id", **extra):
    response = api(client, "POST", "/admin/billing/credits", people["admin"],
                   json={"user_id": people[user], "amount": amount, "note": "welcome",
                         **extra})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _run_usage(app, people, client, hours=3, price=100):
    """An instance of the owner's on a priced plan, metered for `hours` more hours."""
    project = default_project(client, people["owner"])
    with app.app_context(), database.connection_context():
        node = make_node()
        image = make_image(node)
        plan = make_plan(price=price)
        instance = make_instance(project, plan, node, image)
        metering.tick()
        clock.advance(hours * H)
        metering.tick()
    return instance, project


def test_the_overview_shows_balance_burn_rate_and_run_out(app, client, people):
    _grant(client, people, 10_000)
    _run_usage(app, people, client, hours=3, price=100)
    body = api(client, "GET", "/billing", people["owner"]).get_json()
    assert body["balance"] == 10_000 - 400
    assert body["currency"] == "EUR"
    assert body["burn_rate_per_day"] == 2400  # the instance running now, 1.00 an hour
    assert body["burn_rate_last_24h"] == 400  # four hours in the last 24
    assert body["month_to_date"] == 400
    assert body["hours_left"] == pytest.approx(9600 / 100, rel=0.01)
    assert body["projected_run_out_at"].startswith("2025-03-14")
    assert body["run_out_beyond_horizon"] is False
    assert body["provisioning"] == {"can_provision": True, "reason": None, "shortfall": 0}
    assert body["status"] == "active"
    # Nobody else's money shows up.
    other = api(client, "GET", "/billing", people["outsider"]).get_json()
    assert (other["balance"], other["burn_rate_per_day"]) == (0, 0)


def test_the_ledger_lists_newest_first_pages_and_exports_csv(app, client, people):
    _grant(client, people, 500)
    _run_usage(app, people, client, hours=2, price=10)
    page = api(client, "GET", "/billing/credits?limit=2", people["owner"]).get_json()
    assert [e["type"] for e in page["data"]] == ["usage", "usage"]
    assert page["page"]["has_more"] is True
    rest = api(client, "GET", f"/billing/credits?limit=10&cursor={page['page']['next_cursor']}",
               people["owner"]).get_json()
    assert [e["type"] for e in rest["data"]] == ["usage", "grant"]
    assert rest["data"][-1]["note"] == "welcome" and rest["data"][-1]["balance_after"] == 500
    only = api(client, "GET", "/billing/credits?type=grant", people["owner"]).get_json()
    assert len(only["data"]) == 1
    response = api(client, "GET", "/billing/credits/statement.csv", people["owner"])
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["type"] for r in rows] == ["grant", "usage", "usage", "usage"]
    assert rows[-1]["balance_after"] == "470"
    assert api(client, "GET", "/billing/credits", people["outsider"]).get_json()["data"] == []
    bad = api(client, "GET", "/billing/credits?type=gift", people["owner"])
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "type"


def test_promo_codes_credit_once_with_distinct_refusals(client, people):
    admin = people["admin"]
    made = api(client, "POST", "/admin/promo-codes", admin,
               json={"code": "  Spring25 ", "amount": 2500, "max_uses": 1})
    assert made.status_code == 201 and made.get_json()["code"] == "spring25"
    redeemed = api(client, "POST", "/billing/promo", people["owner"], json={"code": " SPRING25"})
    assert redeemed.status_code == 201
    assert redeemed.get_json()["balance"] == 2500
    assert redeemed.get_json()["credit"]["type"] == "promo"

    def code_of(who, code):
        response = api(client, "POST", "/billing/promo", people[who], json={"code": code})
        return response.status_code, response.get_json()["error"]["code"]

    assert code_of("owner", "spring25") == (409, "promo_already_redeemed")
    assert code_of("outsider", "spring25") == (409, "promo_used_up")
    assert code_of("owner", "nosuch") == (404, "promo_not_found")
    api(client, "POST", "/admin/promo-codes", admin,
        json={"code": "old", "amount": 5, "expires_at": "2025-01-01T00:00:00Z"})
    assert code_of("owner", "old") == (409, "promo_expired")
    off = api(client, "POST", "/admin/promo-codes", admin,
              json={"code": "off", "amount": 5}).get_json()
    assert api(client, "PATCH", f"/admin/promo-codes/{off['id']}", admin,
               json={"active": False}).get_json()["active"] is False
    assert code_of("owner", "off") == (409, "promo_inactive")
    assert api(client, "GET", "/billing", people["owner"]).get_json()["balance"] == 2500
    # Deleting: a redeemed code only deactivates; an unused one goes.
    listed = api(client, "GET", "/admin/promo-codes", admin).get_json()["data"]
    spring = next(p for p in listed if p["code"] == "spring25")
    assert spring["uses"] == 1
    assert api(client, "DELETE", f"/admin/promo-codes/{spring['id']}", admin).status_code == 409
    assert api(client, "DELETE", f"/admin/promo-codes/{off['id']}", admin).status_code == 204
    assert api(client, "GET", f"/admin/promo-codes/{off['id']}", admin).status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"code": "ab", "amount": 5}, "code"), ({"code": "abc", "amount": 0}, "amount"),
    ({"code": "abc", "amount": -5}, "amount"), ({"code": "abc", "amount": 10**13}, "amount"),
    ({"code": "abc", "amount": 5, "max_uses": 0}, "max_uses"),
    ({"code": "abc", "amount": 5, "expires_at": "tomorrow"}, "expires_at"),
    ({"code": "a b c", "amount": 5}, "code")])
def test_bad_promo_codes_are_refused_naming_the_field(client, people, body, field):
    response = api(client, "POST", "/admin/promo-codes", people["admin"], json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_alerts_are_listed_added_refused_twice_and_deleted(client, people):
    made = api(client, "POST", "/billing/alerts", people["owner"], json={"threshold": 1000})
    assert made.status_code == 201
    alert = made.get_json()
    assert alert["armed"] is False  # the balance (0) is already below it
    assert api(client, "POST", "/billing/alerts", people["owner"],
               json={"threshold": 1000}).status_code == 409
    for bad in (0, -1, 10**13, "100"):
        response = api(client, "POST", "/billing/alerts", people["owner"],
                       json={"threshold": bad})
        assert response.status_code == 400
        assert response.get_json()["error"]["details"]["field"] == "threshold"
    _grant(client, people, 5000)
    listed = api(client, "GET", "/billing/alerts", people["owner"]).get_json()["data"]
    assert [(a["threshold"], a["armed"]) for a in listed] == [(1000, True)]
    assert api(client, "DELETE", f"/billing/alerts/{alert['id']}",
               people["outsider"]).status_code == 404
    assert api(client, "DELETE", f"/billing/alerts/{alert['id']}",
               people["owner"]).status_code == 204
    assert api(client, "GET", "/billing/alerts", people["owner"]).get_json()["data"] == []


def test_settings_and_spend_cap_are_the_accounts_own(client, people):
    put = api(client, "PUT", "/billing/settings", people["owner"],
              json={"spend_cap": 5000, "invoice_name": "Lab Ltd", "invoice_address": "1 Road",
                    "vat_id": "de 123"})
    assert put.status_code == 200
    assert put.get_json() == {"spend_cap": 5000, "invoice_name": "Lab Ltd",
                              "invoice_address": "1 Road", "vat_id": "DE123",
                              "currency": "EUR"}
    patched = api(client, "PATCH", "/billing/spend-cap", people["owner"],
                  json={"spend_cap": None})
    assert patched.get_json()["spend_cap"] is None
    assert api(client, "GET", "/billing/settings", people["owner"]).get_json()[
        "invoice_name"] == "Lab Ltd"
    assert api(client, "GET", "/billing/settings", people["outsider"]).get_json()[
        "invoice_name"] == ""
    for body, field in (({"spend_cap": -1}, "spend_cap"), ({"spend_cap": 1.5}, "spend_cap"),
                        ({"vat_id": "x" * 41}, "vat_id"), ({"colour": "red"}, "colour")):
        response = api(client, "PUT", "/billing/settings", people["owner"], json=body)
        assert response.status_code == 400, body
        assert response.get_json()["error"]["details"]["field"] == field


def test_keys_need_the_billing_and_usage_scopes(client, people):
    secret, _ = create_key(client, people["owner"], ["instances:read"])
    assert api(client, "GET", "/billing", key_auth(secret)).status_code == 403
    assert api(client, "GET", "/usage", key_auth(secret)).status_code == 403
    reader, _ = create_key(client, people["owner"], ["billing:read", "usage:read"])
    assert api(client, "GET", "/billing", key_auth(reader)).status_code == 200
    assert api(client, "GET", "/usage/chart", key_auth(reader)).status_code == 200
    refused = api(client, "POST", "/billing/promo", key_auth(reader), json={"code": "abc"})
    assert refused.get_json()["error"]["details"] == {"scope": "billing:write"}


def test_usage_summary_chart_daily_resources_and_export(app, client, people):
    clock.freeze(dt.datetime(2025, 3, 10, 20, 30, tzinfo=dt.UTC))
    _grant(client, people, 100_000)
    instance, project = _run_usage(app, people, client, hours=5, price=10)  # 20:00-01:00
    owner = people["owner"]
    summary = api(client, "GET", "/usage", owner).get_json()
    assert summary["active_instances"] == 1
    assert (summary["instance_hours"], summary["amount"]) == (6, 60)
    chart = api(client, "GET", "/usage/chart?days=3", owner).get_json()
    assert [(p["date"], p["quantity"], p["amount"]) for p in chart["data"]] == [
        ("2025-03-09", 0, 0), ("2025-03-10", 4, 40), ("2025-03-11", 2, 20)]
    daily = api(client, "GET", "/usage/daily?date_from=2025-03-10&date_to=2025-03-10",
                owner).get_json()
    assert [(r["date"], r["sku"], r["quantity"]) for r in daily["data"]] == [
        ("2025-03-10", "std", 4)]
    resources = api(client, "GET", "/usage/resources", owner).get_json()
    assert resources["data"] == [{"resource": "instance", "sku": "std", "quantity": 6,
                                  "amount": 60}]
    exported = api(client, "GET", "/usage/export.csv?date_from=2025-03-10", owner)
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert len(rows) == 6 and rows[0]["hour"] == "2025-03-10T20:00:00Z"
    assert rows[0]["subject_id"] == instance.id and rows[0]["amount"] == "10"
    # Another account sees none of it; another's project is 404.
    assert api(client, "GET", "/usage", people["outsider"]).get_json()["instance_hours"] == 0
    hidden = api(client, "GET", f"/usage/daily?project_id={project}", people["outsider"])
    assert hidden.status_code == 404


@pytest.mark.parametrize("query, field", [
    ("/usage/chart?days=0", "days"), ("/usage/chart?days=91", "days"),
    ("/usage/chart?days=abc", "days"), ("/usage/daily?date_from=2025-13-01", "date_from"),
    ("/usage/daily?date_from=2025-03-10&date_to=2025-03-01", "date_from"),
    ("/usage/daily?date_from=2020-01-01&date_to=2025-01-01", "date_to"),
    ("/usage/export.csv?date_to=yesterday", "date_to")])
def test_bad_usage_queries_are_400_naming_the_field(client, people, query, field):
    response = api(client, "GET", query, people["owner"])
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_operator_grants_adjusts_and_sees_every_balance(client, people):
    _grant(client, people, 700)
    taken = _grant(client, people, -200, type="adjustment")
    assert taken["balance_after"] == 500
    for body, field in (({"amount": -5}, "amount"), ({"amount": 0}, "amount"),
                        ({"amount": 10**13}, "amount"), ({"note": ""}, "note"),
                        ({"type": "usage"}, "type")):
        response = api(client, "POST", "/admin/billing/credits", people["admin"],
                       json={"user_id": people["owner_id"], "amount": 5, "note": "x", **body})
        assert response.status_code == 400, body
        assert response.get_json()["error"]["details"]["field"] == field
    unknown = api(client, "POST", "/admin/billing/credits", people["admin"],
                  json={"user_id": "usr_nobody", "amount": 5, "note": "x"})
    assert unknown.status_code == 404
    assert api(client, "POST", "/admin/billing/credits", people["owner"],
               json={"user_id": people["owner_id"], "amount": 5, "note": "x"}).status_code == 403
    accounts = api(client, "GET", "/admin/billing/accounts?q=owner",
                   people["admin"]).get_json()["data"]
    assert [(a["email"], a["balance"]) for a in accounts] == [("owner@example.test", 500)]
    ledger_rows = api(client, "GET", f"/admin/billing/accounts/{people['owner_id']}/credits",
                      people["admin"]).get_json()["data"]
    assert [row["amount"] for row in ledger_rows] == [-200, 700]
    assert api(client, "GET", "/admin/billing/accounts", people["owner"]).status_code == 403


def test_operator_billing_settings_change_at_run_time(client, people):
    admin = people["admin"]
    changed = api(client, "PUT", "/admin/billing/settings", admin,
                  json={"currency": "chf", "vat_rate_bp": 770, "min_balance": 100,
                        "low_balance_thresholds": [100, 500]})
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert (body["currency"], body["vat_rate_bp"], body["min_balance"],
            body["low_balance_thresholds"]) == ("CHF", 770, 100, [500, 100])
    assert api(client, "GET", "/billing", people["owner"]).get_json()["currency"] == "CHF"
    bad = api(client, "PUT", "/admin/billing/settings", admin, json={"vat_rate_bp": 10001})
    assert bad.status_code == 400 and bad.get_json()["error"]["details"]["field"] == "vat_rate_bp"
    bad = api(client, "PUT", "/admin/billing/settings", admin,
              json={"low_balance_thresholds": [0]})
    assert bad.get_json()["error"]["details"]["field"] == "low_balance_thresholds"
    assert api(client, "PUT", "/admin/billing/settings", people["owner"],
               json={"vat_rate_bp": 1}).status_code == 403


def test_creating_or_resizing_below_the_minimum_balance_is_402_with_the_shortfall(
        app, client, people):
    catalog = fake_catalog(app)
    api(client, "PUT", "/admin/billing/settings", people["admin"], json={"min_balance": 300})
    _grant(client, people, 100)
    project = default_project(client, people["owner"])
    refused = api(client, "POST", f"/projects/{project}/instances", people["owner"],
                  json={"name": "web", "plan_id": catalog["plan"], "image_id": catalog["image"]})
    assert refused.status_code == 402
    error = refused.get_json()["error"]
    assert error["code"] == "payment_required"
    assert error["details"] == {"reason": "below_minimum_balance", "balance": 100,
                                "minimum_balance": 300, "shortfall": 200, "currency": "EUR"}
    _grant(client, people, 200)
    made = api(client, "POST", f"/projects/{project}/instances", people["owner"],
               json={"name": "web", "plan_id": catalog["plan"], "image_id": catalog["image"]})
    assert made.status_code == 202
    api(client, "PUT", "/admin/billing/settings", people["admin"], json={"min_balance": 10_000})
    resized = api(client, "POST",
                  f"/projects/{project}/instances/{made.get_json()['instance']['id']}/resize",
                  people["owner"], json={"plan_id": catalog["large_plan"]})
    assert resized.status_code in (402, 409)  # 409 while the create job has not run yet
    with app.app_context():
        assert prepaid.readiness(people["owner_id"]).shortfall == 10_000 - 300


def test_zero_balance_starts_grace_then_suspends_stops_and_lifts_after_a_top_up(
        app, client, people):
    api(client, "PUT", "/admin/billing/settings", people["admin"], json={"grace_hours": 2})
    _grant(client, people, 300)
    instance, project = _run_usage(app, people, client, hours=2, price=100)  # 300 used
    with app.app_context(), database.connection_context():
        assert prepaid.enforce()["grace_started"] == 1
        clock.advance(H)
        metering.tick()
        assert prepaid.enforce()["suspended"] == 0
        clock.advance(H)
        counts = prepaid.enforce()
        assert (counts["suspended"], counts["stops_queued"]) == (1, 1)
        assert Instance.get_by_id(instance.id).suspended_at is not None
        assert Job.get(Job.instance == instance.id).type == "instance.stop"
        assert prepaid.enforce()["stops_queued"] == 0  # idempotent: the stop is queued
    overview = api(client, "GET", "/billing", people["owner"]).get_json()
    assert overview["status"] == "suspended"
    assert overview["provisioning"]["reason"] == "suspended"
    start = api(client, "POST", f"/projects/{project}/instances/{instance.id}/start",
                people["owner"], json={})
    assert start.status_code == 402 and start.get_json()["error"]["code"] == "payment_required"
    _grant(client, people, 1000)  # lifts the suspension in the credit's own transaction
    with app.app_context(), database.connection_context():
        assert prepaid.enforce()["lifted"] == 0
        assert Instance.get_by_id(instance.id).suspended_at is None
        account = BillingAccount.get_by_id(people["owner_id"])
        assert (account.suspended_at, account.grace_started_at) == (None, None)
    assert api(client, "GET", "/billing", people["owner"]).get_json()["status"] == "active"


def test_reaching_the_spend_cap_refuses_provisioning_and_suspends(app, client, people):
    _grant(client, people, 100_000)
    api(client, "PATCH", "/billing/spend-cap", people["owner"], json={"spend_cap": 250})
    _run_usage(app, people, client, hours=2, price=100)
    body = api(client, "GET", "/billing", people["owner"]).get_json()
    assert body["provisioning"]["reason"] == "spend_cap_reached"
    with app.app_context(), database.connection_context():
        assert prepaid.enforce()["suspended"] == 1
    api(client, "PATCH", "/billing/spend-cap", people["owner"], json={"spend_cap": 10_000})
    with app.app_context(), database.connection_context():
        assert prepaid.enforce()["lifted"] == 1
