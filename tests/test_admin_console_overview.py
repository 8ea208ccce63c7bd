"""The operator's overview: figures seeded with known numbers, each matching the list its
link leads to, over the JSON API and on the admin home page."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from appliance.models import (
    BillingAccount,
    Job,
    LimitRequest,
    MailOutbox,
    Node,
    Webhook,
)
from appliance.services import clock
from appliance.services.billing import ledger
from appliance.services.ids import new_id
from tests.factories import (
    T0,
    api,
    default_project_of,
    delete_instance,
    make_image,
    make_instance,
    make_node,
    make_user,
)

HOUR = dt.timedelta(hours=1)


@pytest.fixture(autouse=True)
def frozen():
    """The clock stands at T0 from the start, before anyone signs in."""
    clock.freeze(T0)


@pytest.fixture
def seeded(app, admin_user, catalog):
    """Known numbers: 4 running (one on an unhealthy node), 1 stopped, 1 failed (and 1
    deleted) instances; 1 account in grace, 2 suspended for billing, 1 user suspended;
    this month 1000 + 250 + 40 of credit (a February grant, a negative adjustment and
    usage are not credit) and 30 + 12 of usage; 2 pending limit requests; 1 job failed
    within 24 h (another 2 days ago); 1 disabled webhook; 1 failed and 2 held mails."""
    people = [make_user(app, f"u{n}@example.test") for n in range(5)]
    with app.app_context():
        node = Node.get_by_id(catalog["node"])
        image = make_image(node)
        down = make_node("down-1")
        Node.update(health="unhealthy", health_message="Cannot reach it.").where(
            Node.id == down.id).execute()
        projects = [default_project_of(user.id) for user in people]
        for status in ("running", "running", "running", "stopped", "failed"):
            make_instance(projects[0], "pln_small", node, image, status=status)
        make_instance(projects[1], "pln_large", down, make_image(down))
        gone = make_instance(projects[1], "pln_small", node, image)
        delete_instance(gone, T0)
        # The first node holds the five small ones (1 vCPU each); the large one (2 vCPUs)
        # runs on the unhealthy node.

        clock.freeze(dt.datetime(2025, 2, 20, tzinfo=dt.UTC))
        ledger.post(people[0].id, "grant", 700, "grant:feb")
        clock.freeze(T0 - 5 * 24 * HOUR)
        ledger.post(people[0].id, "grant", 1000, "grant:a")
        ledger.post(people[1].id, "promo", 250, "promo:SPRING:u1")
        ledger.post(people[2].id, "refund", 40, "refund:x")
        ledger.post(people[2].id, "adjustment", -15, "adjustment:y")
        ledger.post(people[0].id, "usage", -30, "usage:ins_a:2025-03-05T07")
        ledger.post(people[1].id, "usage", -12, "usage:ins_b:2025-03-05T07")
        clock.freeze(T0)

        now = clock.now()
        BillingAccount.update(grace_started_at=now).where(
            BillingAccount.user == people[0].id).execute()
        BillingAccount.update(grace_started_at=now, suspended_at=now).where(
            BillingAccount.user.in_([people[1].id, people[2].id])).execute()
        people[3].status = "suspended"
        people[3].save()

        for status in ("pending", "pending", "approved"):
            LimitRequest.create(id=new_id("lrq"), user=people[4].id, resource="instances",
                                current_limit=5, requested=10, status=status,
                                created_at=now)
        for finished in (now - HOUR, now - 48 * HOUR):
            Job.create(id=new_id("job"), type="instance.start", project=projects[0],
                       status="failed", error="The engine said no.", created_at=finished,
                       finished_at=finished)
        Job.create(id=new_id("job"), type="instance.stop", project=projects[0],
                   status="succeeded", created_at=now, finished_at=now)
        for status in ("disabled", "active"):
            Webhook.create(id=new_id("whk"), user=people[4].id, url="https://hooks.test/x",
                           secret_sealed="sealed", status=status,
                           disabled_reason="410 Gone" if status == "disabled" else None,
                           created_at=now, updated_at=now)
        for status in ("failed", "held", "held", "sent"):
            MailOutbox.create(id=new_id("mail"), to_addr="a@example.test", subject="Hi",
                              body="Hello", status=status, created_at=now)
    return {"node": node.id, "down": down.id}


def _all(client, admin, href: str) -> list[dict]:
    """Every row of the list at `href` (an /api/v1 address), page after page."""
    rows, cursor = [], None
    while True:
        parts = urlsplit(href)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        query["limit"] = "2"  # several pages
        if cursor:
            query["cursor"] = cursor
        response = api(client, "GET", parts.path.removeprefix("/api/v1"), admin,
                       query_string=query)
        assert response.status_code == 200, (href, response.get_json())
        body = response.get_json()
        rows += body["data"]
        cursor = body["page"]["next_cursor"]
        if cursor is None:
            return rows


def test_the_overview_figures_match_the_lists_behind_them(client, admin, seeded):
    response = api(client, "GET", "/admin/overview", admin)
    assert response.status_code == 200, response.get_json()
    o = response.get_json()

    by_state = {state: figure["count"] for state, figure in o["instances"]["by_state"].items()}
    assert by_state == {"creating": 0, "running": 4, "stopped": 1, "failed": 1,
                        "deleting": 0}
    assert o["instances"]["total"]["count"] == 6
    for state, figure in [*o["instances"]["by_state"].items(), ("all", o["instances"]["total"])]:
        listed = _all(client, admin, figure["href"])
        assert len(listed) == figure["count"], state
        if state != "all":
            assert {row["status"] for row in listed} <= {state}

    assert o["accounts_in_grace"]["count"] == 1
    assert o["accounts_suspended"]["count"] == 2
    assert o["users_suspended"]["count"] == 1
    for name in ("accounts_in_grace", "accounts_suspended", "users_suspended",
                 "limit_requests_pending", "jobs_failed", "webhooks_disabled", "mail_failed",
                 "mail_held"):
        assert len(_all(client, admin, o[name]["href"])) == o[name]["count"], name
    assert {row["status"] for row in _all(client, admin, o["accounts_in_grace"]["href"])} == {
        "grace"}
    assert (o["limit_requests_pending"]["count"], o["jobs_failed"]["count"],
            o["webhooks_disabled"]["count"], o["mail_failed"]["count"],
            o["mail_held"]["count"]) == (2, 1, 1, 1, 2)

    assert o["month"] == "2025-03"
    assert o["credit_added"]["amount"] == 1000 + 250 + 40
    assert o["usage_charged"]["amount"] == 30 + 12
    for name in ("credit_added", "usage_charged"):
        listed = _all(client, admin, o[name]["href"])
        assert abs(sum(row["amount"] for row in listed)) == o[name]["amount"], name
        first_page = api(client, "GET", o[name]["href"].removeprefix("/api/v1"),
                         admin).get_json()
        assert first_page["total"] == o[name]["amount"]
    assert {row["type"] for row in _all(client, admin, o["credit_added"]["href"])} == {
        "grant", "promo", "refund"}


def test_the_overview_shows_each_node_with_health_and_allocation(client, admin, seeded):
    o = api(client, "GET", "/admin/overview", admin).get_json()
    nodes = {node["id"]: node for node in o["nodes"]}
    main, down = nodes[seeded["node"]], nodes[seeded["down"]]
    assert main["health"] == "healthy" and down["health"] == "unhealthy"
    assert down["health_message"] == "Cannot reach it."
    assert main["allocated"] == {"vcpus": 5, "memory_mb": 5 * 512, "disk_gb": 50}
    assert main["capacity"] == {"vcpus": 64, "memory_mb": 65536, "disk_gb": 1000}
    assert main["allotted"] == {"vcpus": 256, "memory_mb": 65536, "disk_gb": 1000}  # 4x vCPU
    assert down["allocated"]["vcpus"] == 2
    assert main["instances"]["count"] == 5
    assert len(_all(client, admin, main["instances"]["href"])) == 5


def test_the_admin_home_page_shows_the_figures_as_links(root, seeded):
    page = root.page("/admin/")

    def figure(name: str) -> tuple[str, str]:
        found = re.search(rf'<a href="([^"]+)" data-testid="figure-{name}">([^<]+)</a>', page)
        assert found, name
        return found.group(1).replace("&amp;", "&"), found.group(2)

    assert figure("instances") == ("/admin/instances", "6")
    assert figure("grace") == ("/admin/billing/?status=grace", "1")
    assert figure("suspended") == ("/admin/billing/?status=suspended", "2")
    href, credit = figure("credit")
    assert href == "/admin/billing/ledger?kind=credit&month=2025-03"
    assert credit.startswith("12.90")
    assert figure("usage")[1].startswith("0.42")
    assert figure("limit-requests") == ("/admin/limits?status=pending", "2")
    assert figure("failed-jobs") == ("/admin/jobs?status=failed&within_hours=24", "1")
    assert figure("webhooks") == ("/admin/webhooks?status=disabled", "1")
    assert figure("mail") == ("/admin/mail?status=failed", "1")
    assert re.search(r'data-testid="state-running">.*?<strong>4</strong>', page, re.S)
    assert "Cannot reach it." in page


def test_each_list_behind_a_figure_shows_what_it_counts(root, seeded):
    grace = root.page("/admin/billing/?status=grace")
    assert grace.count('<span class="badge badge-warn">grace</span>') == 1
    credit = root.page("/admin/billing/ledger?kind=credit&month=2025-03")
    assert re.search(r'data-testid="books-total">12\.90', credit)
    assert "grant:feb" not in credit and "u0@example.test" in credit
    usage = root.page("/admin/billing/ledger?kind=usage")  # this month by default
    assert re.search(r'data-testid="books-total">0\.42', usage)
    jobs = root.page("/admin/jobs?status=failed&within_hours=24")
    assert jobs.count("The engine said no.") == 2  # its title and its text
    assert jobs.count('<tr id="job-') == 1
    webhooks = root.page("/admin/webhooks?status=disabled")
    assert webhooks.count('<tr id="webhook-') == 1 and "410 Gone" in webhooks
    node_page = root.page(f"/admin/nodes/{seeded['node']}")
    assert re.search(r'data-testid="allocated-vcpus">5 of 256 \(64 &times; 4\)<', node_page)


def test_non_admins_get_403_on_the_overview_and_its_lists(client, owner, root, ada):
    for path in ("/admin/overview", "/admin/jobs", "/admin/webhooks",
                 "/admin/billing/ledger?kind=credit"):
        response = api(client, "GET", path, owner)
        assert response.status_code == 403, path
        assert response.get_json()["error"]["code"] == "admin_only"
    for path in ("/admin/", "/admin/jobs", "/admin/webhooks", "/admin/billing/ledger"):
        assert ada.get(path).status_code == 403, path
        assert root.get(path).status_code == 200, path


def test_a_month_is_checked(client, admin):
    bad = api(client, "GET", "/admin/billing/ledger?kind=usage&month=2025-13", admin)
    assert bad.status_code == 400
    assert bad.get_json()["error"]["details"]["field"] == "month"
    empty = api(client, "GET", "/admin/billing/ledger?kind=usage&month=1999-12",
                admin).get_json()
    assert empty["data"] == [] and empty["total"] == 0 and empty["month"] == "1999-12"
