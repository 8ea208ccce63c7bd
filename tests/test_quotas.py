"""Account limits: defaults, overrides, enforcement, and requests to raise them."""

from __future__ import annotations

import pytest

from appliance.services.limits import quotas
from tests.factories import api, create_key


@pytest.fixture
def people(owner, admin):
    return {"owner": owner, "admin": admin}


def _limits(client, headers) -> dict[str, dict]:
    return {row["resource"]: row
            for row in api(client, "GET", "/account/limits", headers).get_json()["data"]}


def test_limits_show_used_and_limit_for_every_resource(client, people):
    create_key(client, people["owner"])
    limits = _limits(client, people["owner"])
    assert set(limits) == {r.name for r in quotas.RESOURCES}
    assert limits["api_keys"] == {
        "resource": "api_keys", "label": "API keys", "unit": "keys", "used": 1,
        "limit": 25, "available": 24, "overridden": False}


def test_creating_past_the_limit_is_403_with_the_numbers(client, people):
    owner_id = api(client, "GET", "/auth/me", people["owner"]).get_json()["id"]
    response = api(client, "PUT", f"/admin/users/{owner_id}/limits", people["admin"],
                   json={"resource": "api_keys", "value": 2})
    assert response.status_code == 200
    create_key(client, people["owner"])
    _, second = create_key(client, people["owner"])
    refused = api(client, "POST", "/api-keys", people["owner"],
                  json={"name": "third", "scopes": ["usage:read"]})
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"] == {"resource": "api_keys", "limit": 2, "used": 2, "requested": 1}
    # Revoked keys do not count.
    api(client, "DELETE", f"/api-keys/{second['id']}", people["owner"])
    create_key(client, people["owner"])


def test_operator_defaults_apply_to_accounts_without_an_override(client, people):
    response = api(client, "PUT", "/admin/limits/defaults", people["admin"],
                   json={"instances": 3})
    assert response.status_code == 200 and response.get_json()["instances"] == 3
    assert _limits(client, people["owner"])["instances"]["limit"] == 3
    owner_id = api(client, "GET", "/auth/me", people["owner"]).get_json()["id"]
    api(client, "PUT", f"/admin/users/{owner_id}/limits", people["admin"],
        json={"resource": "instances", "value": 7})
    instances = _limits(client, people["owner"])["instances"]
    assert (instances["limit"], instances["overridden"]) == (7, True)
    api(client, "PUT", f"/admin/users/{owner_id}/limits", people["admin"],
        json={"resource": "instances", "value": None})
    assert _limits(client, people["owner"])["instances"]["limit"] == 3


def test_a_limit_request_is_approved_by_an_admin(client, people):
    asked = api(client, "POST", "/account/limit-requests", people["owner"],
                json={"resource": "instances", "requested": 40, "reason": "lab cluster"})
    assert asked.status_code == 201
    request_id = asked.get_json()["id"]
    assert asked.get_json()["current_limit"] == 10
    twice = api(client, "POST", "/account/limit-requests", people["owner"],
                json={"resource": "instances", "requested": 50})
    assert twice.status_code == 409
    not_admin = api(client, "POST", f"/admin/limit-requests/{request_id}/approve",
                    people["owner"], json={})
    assert not_admin.status_code == 403
    pending = api(client, "GET", "/admin/limit-requests", people["admin"],
                  query_string={"status": "pending"}).get_json()["data"]
    assert [r["id"] for r in pending] == [request_id]
    approved = api(client, "POST", f"/admin/limit-requests/{request_id}/approve",
                   people["admin"], json={"note": "enjoy"})
    assert approved.get_json()["status"] == "approved"
    assert _limits(client, people["owner"])["instances"]["limit"] == 40
    again = api(client, "POST", f"/admin/limit-requests/{request_id}/decline",
                people["admin"], json={})
    assert again.status_code == 409
    mine = api(client, "GET", "/account/limit-requests", people["owner"]).get_json()["data"]
    assert mine[0]["decision_note"] == "enjoy"


def test_a_declined_request_changes_nothing(client, people):
    request_id = api(client, "POST", "/account/limit-requests", people["owner"],
                     json={"resource": "vcpus", "requested": 64}).get_json()["id"]
    declined = api(client, "POST", f"/admin/limit-requests/{request_id}/decline",
                   people["admin"], json={"note": "not now"})
    assert declined.get_json()["status"] == "declined"
    assert _limits(client, people["owner"])["vcpus"]["limit"] == 16


@pytest.mark.parametrize(("body", "field"), [
    ({"resource": "gpus", "requested": 5}, "resource"),
    ({"resource": "instances", "requested": 5}, "requested"),  # not above the current 10
    ({"resource": "instances", "requested": 0}, "requested"),
    ({"resource": "instances", "requested": 20, "reason": "x" * 1001}, "reason"),
])
def test_bad_limit_requests_name_the_field(client, people, body, field):
    response = api(client, "POST", "/account/limit-requests", people["owner"], json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == field


def test_usage_counters_are_registered_by_the_owning_service(app, people, client):
    previous = quotas._usage.get("instances")
    quotas.register_usage("instances", lambda user: 4)
    try:
        assert _limits(client, people["owner"])["instances"]["used"] == 4
        with app.app_context():
            from appliance.models import User

            user = User.get(User.email == "owner@example.test")
            quotas.check(user, "instances", 6)
            with pytest.raises(Exception, match="4 of 10"):
                quotas.check(user, "instances", 7)
    finally:
        if previous is None:
            quotas._usage.pop("instances")
        else:
            quotas._usage["instances"] = previous
