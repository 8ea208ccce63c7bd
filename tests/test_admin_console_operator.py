"""The operator's console, second part: node overcommit, node registration that tells the
truth, the email-verification gate, bans with an end, the promo check, and the
administrators' live stream woken by others' failed jobs."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from appliance.db import database
from appliance.drivers import fake
from appliance.drivers.base import DriverError
from appliance.models import LedgerEntry, Node, PromoRedemption, User
from appliance.scheduler import run_task
from appliance.services import clock
from appliance.services.events import live
from appliance.services.instances import nodes
from appliance.services.principal import Principal
from tests.driver_contract import require_engine
from tests.factories import (
    HTML,
    PASSWORD,
    Browser,
    api,
    create_instance,
    csrf_from,
    default_project,
    fake_catalog,
    make_node,
    make_user,
    run_jobs,
    sign_in,
    signed_in,
    token_from_mail,
)
from tests.receivers import allow_loopback

MAY_1 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def frozen():
    """The clock stands at MAY_1 before anyone signs in (list it first)."""
    clock.freeze(MAY_1)


# Node capacity with overcommit ------------------------------------------------------


def test_a_vcpu_ratio_of_4_on_a_2_core_node_places_eight_1_vcpu_containers_not_nine(
        app, client, owner, admin, root):
    with app.app_context():
        fake.forget_all()
        from tests.factories import make_plan

        make_plan("small", price=1, cap=500)  # 1 vCPU, 512 MB, 10 GB
        node = make_node("two-cores", endpoint="fake://two-cores",
                         capacity=nodes.Capacity(2, 65536, 1000), check=True)
        image = next(i for i in node.images if i.ref == "fake/debian-12")
        assert node.vcpu_ratio_pct == 400  # the default for new nodes
    project = default_project(client, owner)
    for number in range(1, 9):
        made = api(client, "POST", f"/projects/{project}/instances", owner,
                   json={"name": f"c-{number}", "plan_id": "small", "image_id": image.id})
        assert made.status_code == 202, (number, made.get_json())
    ninth = api(client, "POST", f"/projects/{project}/instances", owner,
                json={"name": "c-9", "plan_id": "small", "image_id": image.id})
    assert ninth.status_code == 503 and ninth.get_json()["error"]["code"] == "no_capacity"

    shown = api(client, "GET", f"/admin/nodes/{node.id}", admin).get_json()
    assert (shown["capacity_vcpus"], shown["vcpu_ratio"], shown["allotted_vcpus"],
            shown["free_vcpus"]) == (2, 4.0, 8, 0)
    page = root.page(f"/admin/nodes/{node.id}")
    allocated = re.search(r'data-testid="allocated-vcpus">([^<]*)<', page).group(1)
    assert " ".join(allocated.replace("&times;", "x").split()) == "8 of 8 (2 x 4)"

    # The operator lowers the ratio: the node is full beyond it (nothing is moved).
    lowered = api(client, "PATCH", f"/admin/nodes/{node.id}", admin, json={"vcpu_ratio": 2})
    assert lowered.status_code == 200 and lowered.get_json()["allotted_vcpus"] == 4
    assert api(client, "PATCH", f"/admin/nodes/{node.id}", admin,
               json={"vcpu_ratio": 1000}).status_code == 400
    saved = root.post(f"/admin/nodes/{node.id}/edit", {
        "name": "two-cores", "capacity_vcpus": "2", "capacity_memory_mb": "65536",
        "capacity_disk_gb": "1000", "vcpu_ratio": "5", "memory_ratio": "1.5",
        "disk_ratio": "1"})
    assert saved.status_code == 302
    with app.app_context():
        again = Node.get_by_id(node.id)
        assert (again.vcpu_ratio_pct, again.memory_ratio_pct) == (500, 150)
        assert nodes.allotted_capacity(again) == nodes.Capacity(10, 98304, 1000)


# Node registration tells the truth ---------------------------------------------------


def test_registering_an_unreachable_node_says_so_in_one_sentence(client, admin, root):
    posted = root.post("/admin/nodes", {
        "name": "far-away", "engine": "docker", "endpoint": "tcp://127.0.0.1:9",
        "capacity_vcpus": "2", "capacity_memory_mb": "2048", "capacity_disk_gb": "20",
        "vcpu_ratio": "4", "memory_ratio": "1", "disk_ratio": "1", "enabled": "on"},
        follow=True)
    page = posted.get_data(as_text=True)
    found = re.search(r'class="alert alert-warn[^"]*"[^>]*>([^<]*)<', page)
    assert found, page[:3000]
    assert found.group(1).startswith("far-away is registered, but unreachable: Cannot reach "
                                     "the engine at tcp://127.0.0.1:9: connection refused.")
    assert "Traceback" not in page and "Error(" not in page
    # Without a capacity the engine must say it: an unreachable one cannot.
    refused = api(client, "POST", "/admin/nodes", admin, json={
        "name": "far-away-2", "engine": "docker", "endpoint": "tcp://127.0.0.1:9"})
    assert refused.status_code == 400
    assert refused.get_json()["error"]["details"]["field"] == "capacity_vcpus"
    assert "could not be asked" in refused.get_json()["error"]["message"]


def test_a_docker_node_registered_without_a_capacity_takes_the_engines_figures(client, admin):
    import docker

    from appliance import drivers

    require_engine("docker", lambda: drivers.connect("docker", "").info())
    reported = docker.from_env().info()
    made = api(client, "POST", "/admin/nodes", admin, json={
        "name": "local-docker-figures", "engine": "docker", "endpoint": ""})
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["health"] == "healthy"
    assert body["capacity_vcpus"] == body["engine_vcpus"] == reported["NCPU"]
    assert body["capacity_memory_mb"] == body["engine_memory_mb"] == (
        reported["MemTotal"] // 2**20)
    assert body["allotted_vcpus"] == 4 * reported["NCPU"]


# The email verification gate ---------------------------------------------------------


def test_an_unverified_account_cannot_create_instances_keys_or_webhooks_until_it_confirms(
        app, client, monkeypatch):
    allow_loopback(monkeypatch)  # the webhook's URL is this machine's
    catalog = fake_catalog(app)
    client.post("/api/v1/auth/signup", json={"email": "new@example.test", "password": PASSWORD})
    headers = signed_in(client, "new@example.test")
    project = default_project(client, headers)
    attempts = {
        "instance": lambda: api(client, "POST", f"/projects/{project}/instances", headers,
                                json={"name": "web-1", "plan_id": catalog["plan"],
                                      "image_id": catalog["image"]}),
        "key": lambda: api(client, "POST", "/api-keys", headers,
                           json={"name": "ci", "scopes": ["instances:read"]}),
        "webhook": lambda: api(client, "POST", "/webhooks", headers,
                               json={"url": "http://127.0.0.1:9/in"}),
    }
    for what, attempt in attempts.items():
        refused = attempt()
        assert refused.status_code == 403, what
        error = refused.get_json()["error"]
        assert error["code"] == "email_not_verified", what
        assert error["details"]["resend_url"] == "/api/v1/auth/resend-verification"
    # Signing in and reading pages still work.
    assert api(client, "GET", "/projects", headers).status_code == 200

    token = token_from_mail(app, "new@example.test", "/verify-email")
    link = client.get(f"/verify-email?token={token}", headers=HTML).get_data(as_text=True)
    confirmed = client.post("/verify-email", data={"token": token,
                                                   "csrf_token": csrf_from(link)}, headers=HTML)
    assert confirmed.status_code == 200 and "confirmed" in confirmed.get_data(as_text=True)
    for what, attempt in attempts.items():
        done = attempt()
        assert done.status_code in (201, 202), (what, done.get_json())


def test_the_dashboard_shows_a_banner_with_a_resend_button_while_unconfirmed(app):
    make_user(app, "new@example.test", verified=False)
    browser = Browser(app, "new@example.test")
    page = browser.page("/account")
    assert "Confirm your email address to create instances" in page
    assert 'action="/account/resend-verification"' in page and "Resend the email" in page
    resent = browser.post("/account/resend-verification")
    assert resent.status_code == 302
    with app.app_context():
        from appliance.models import MailOutbox

        assert MailOutbox.select().where(MailOutbox.to_addr == "new@example.test").count() == 1
    make_user(app, "old@example.test")
    assert "Resend the email" not in Browser(app, "old@example.test").page("/account")


def test_the_operator_can_turn_the_gate_off_at_run_time(app, client, admin):
    make_user(app, "new@example.test", verified=False)
    headers = signed_in(client, "new@example.test")
    key = {"name": "ci", "scopes": ["instances:read"]}
    assert api(client, "POST", "/api-keys", headers, json=key).status_code == 403
    off = api(client, "PUT", "/admin/settings", admin, json={"require_verified_email": False})
    assert off.status_code == 200
    assert api(client, "POST", "/api-keys", headers, json=key).status_code == 201


# Bans with an end --------------------------------------------------------------------


def test_a_ban_with_an_end_shows_its_reason_at_sign_in_and_lifts_itself(frozen, app, client,
                                                                         admin, root):
    ada = make_user(app, "ada@example.test")
    until = "2026-05-01T12:30:00Z"
    banned = api(client, "POST", f"/admin/users/{ada.id}/suspend", admin,
                 json={"reason": "Spam from your instances", "until": until})
    assert banned.status_code == 200, banned.get_json()
    assert banned.get_json()["suspended_until"] == until

    refused = client.post("/api/v1/auth/login",
                          json={"email": "ada@example.test", "password": PASSWORD})
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert error["code"] == "account_suspended"
    assert error["details"] == {"reason": "Spam from your instances", "until": until}
    assert "Spam from your instances" in error["message"] and "2026-05-01 at 12:30" in (
        error["message"])
    page = sign_in(app.test_client(), "ada@example.test").get_data(as_text=True)
    assert "Spam from your instances" in page and "2026-05-01 at 12:30 UTC" in page

    listed = root.page("/admin/users?status=suspended")
    assert "until 2026-05-01 12:30 UTC" in listed
    api_listed = api(client, "GET", "/admin/users?status=suspended", admin).get_json()["data"]
    assert [(u["email"], u["suspended_until"]) for u in api_listed] == [
        ("ada@example.test", until)]
    with app.app_context():
        from appliance.models import MailOutbox

        told = MailOutbox.get(MailOutbox.to_addr == "ada@example.test")
        assert "Spam from your instances" in told.body and "2026-05-01 at 12:30" in told.body

    assert run_task(app, "lift_ended_suspensions") == 0  # not yet
    clock.advance(dt.timedelta(minutes=31))
    assert run_task(app, "lift_ended_suspensions") == 1
    assert run_task(app, "lift_ended_suspensions") == 0  # once
    with app.app_context():
        again = User.get_by_id(ada.id)
        assert (again.status, again.suspended_until, again.suspended_reason) == (
            "active", None, None)
    assert client.post("/api/v1/auth/login", json={
        "email": "ada@example.test", "password": PASSWORD}).status_code == 200


def test_a_ban_ending_in_the_past_is_refused_and_the_form_takes_an_end(frozen, app, client,
                                                                       admin, root):
    ada = make_user(app, "ada@example.test")
    past = api(client, "POST", f"/admin/users/{ada.id}/suspend", admin,
               json={"reason": "x", "until": "2026-05-01T11:00:00Z"})
    assert past.status_code == 400 and past.get_json()["error"]["details"]["field"] == "until"
    posted = root.post(f"/admin/users/{ada.id}/suspend",
                       {"reason": "Cooling off", "until": "2026-05-02T08:00"})
    assert posted.status_code == 302
    with app.app_context():
        assert User.get_by_id(ada.id).suspended_until == dt.datetime(2026, 5, 2, 8, 0,
                                                                     tzinfo=dt.UTC)


# Promo code check --------------------------------------------------------------------


def _promo(client, admin, code: str, **fields):
    made = api(client, "POST", "/admin/promo-codes", admin,
               json={"code": code, "amount": 500, **fields})
    assert made.status_code == 201, made.get_json()
    return made.get_json()


def test_checking_a_promo_code_says_what_it_gives_or_why_not_without_redeeming(  # noqa: PLR0917
        frozen, app, client, owner, owner_user, admin, root):
    _promo(client, admin, "WELCOME")
    _promo(client, admin, "OLD", expires_at="2026-05-01T12:10:00Z")
    checked = api(client, "GET", "/billing/promo/welcome", owner)
    assert checked.status_code == 200
    assert checked.get_json() == {"code": "welcome", "valid": True, "amount": 500,
                                  "currency": "EUR", "expires_at": None, "refusal": None}
    with app.app_context():
        assert PromoRedemption.select().count() == 0
        assert LedgerEntry.select().where(LedgerEntry.user == owner_user.id).count() == 0

    missing = api(client, "GET", "/billing/promo/nope", owner).get_json()
    assert "valid" in missing, missing
    assert (missing["valid"], missing["refusal"]["code"]) == (False, "promo_not_found")
    assert api(client, "POST", "/billing/promo", owner, json={"code": "WELCOME"}).status_code \
        == 201
    again = api(client, "GET", "/billing/promo/WELCOME", owner).get_json()
    assert (again["valid"], again["refusal"]["code"]) == (False, "promo_already_redeemed")
    redeemed_again = api(client, "POST", "/billing/promo", owner, json={"code": "WELCOME"})
    assert redeemed_again.get_json()["error"]["code"] == again["refusal"]["code"]

    clock.advance(dt.timedelta(minutes=11))  # within the access token's 15 minutes
    expired = api(client, "GET", "/billing/promo/OLD", owner).get_json()
    assert (expired["valid"], expired["refusal"]["code"]) == (False, "promo_expired")
    assert api(client, "POST", "/billing/promo", owner,
               json={"code": "OLD"}).get_json()["error"]["code"] == "promo_expired"
    admin_list = root.page("/admin/billing/promo-codes")
    row = re.search(r'<tr id="promo-[^"]+" class="row-inactive">\s*<td><code>OLD</code>'
                    r'.*?</tr>', admin_list, re.S)
    assert row and ">expired<" in row.group(0)


def test_the_promo_form_checks_the_code_before_it_is_redeemed(app, client, admin, ada):
    _promo(client, admin, "WELCOME")
    page = ada.page("/billing")
    assert 'hx-get="/billing/promo/check"' in page and 'id="promo-check"' in page
    shown = ada.get("/billing/promo/check?code=welcome", headers={"HX-Request": "true"})
    text = shown.get_data(as_text=True)
    assert shown.status_code == 200 and 'data-promo-check="valid"' in text and "WELCOME" in text
    nope = ada.get("/billing/promo/check?code=nope", headers={"HX-Request": "true"})
    assert 'data-promo-check="promo_not_found"' in nope.get_data(as_text=True)
    with app.app_context():
        assert PromoRedemption.select().count() == 0


# The administrators' live stream ------------------------------------------------------


def test_an_administrators_stream_is_woken_by_a_failed_job_of_another_account(  # noqa: PLR0917
        app, client, owner, owner_project, admin_user, catalog, monkeypatch):
    made = create_instance(app, client, owner, owner_project, catalog)
    monkeypatch.setattr(live, "limits", lambda: (3, 10, 6.0))

    def broken(self, ref, graceful=True, timeout=30):
        raise DriverError("the disk is on fire", permanent=True)

    monkeypatch.setattr(fake.FakeDriver, "stop", broken)
    with app.app_context(), database.connection_context():
        stream = live.open_stream(Principal(User.get_by_id(admin_user.id), None, "session"))
        assert next(stream).startswith("retry:")
    assert api(client, "POST", f"/projects/{owner_project}/instances/{made['id']}/stop",
               owner).status_code == 202
    run_jobs(app)
    with app.app_context():
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if "notification.created" in chunk:
                break
        stream.close()
    text = "".join(chunks)
    assert "event: notification.created\n" in text and '"type":"job.failed"' in text
    assert "event: job.failed" not in text  # another account's event itself is not shown
