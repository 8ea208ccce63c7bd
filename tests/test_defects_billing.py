"""Defects of billing and the overview, each pinned by the behaviour that failed: the
run-out projection of a large balance, credit that did not lift grace, a run-out guessed
from history, overview numbers that disagreed, records that said too little, and small
texts (an expired promo code shown active, a broken banner, a limit counted as zero).

Self-contained: the rows and the signed-in dashboard are made here (the clock is frozen
and moved, never slept on)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest

from appliance.db import database
from appliance.models import (
    AuditLog,
    Backup,
    BillingAccount,
    Image,
    Instance,
    LedgerEntry,
    MailOutbox,
    Node,
    Notification,
    Plan,
    Project,
    PromoCode,
    UsageRecord,
)
from appliance.services import clock
from appliance.services.billing import metering, prepaid, promo, usage
from appliance.services.events import notifications
from appliance.services.ids import new_id
from appliance.services.ops import dashboard_metrics
from appliance.services.principal import Principal
from tests.factories import PASSWORD, api, bearer, create_key, key_auth, login, make_user

T0 = dt.datetime(2025, 3, 10, 12, 30, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
HTML = {"Accept": "text/html"}


# Fixtures: the app, the people, rows and a signed-in dashboard -----------------------


@pytest.fixture
def app(make_app):
    # The tests move the clock by hours; a dashboard session must outlive them.
    return make_app(SESSION_IDLE_MINUTES=100_000)


@pytest.fixture
def people(app):
    clock.freeze(T0)
    return {"ada": make_user(app, "ada@example.test", display_name="Ada"),
            "root": make_user(app, "root@example.test", role="admin")}


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


class Dashboard:
    """One signed-in dashboard user on the test client."""

    def __init__(self, app, email: str) -> None:
        self.client = app.test_client()
        form = {"email": email, "password": PASSWORD,
                "csrf_token": _csrf(self.client.get("/signin").get_data(as_text=True))}
        assert self.client.post("/signin", data=form).status_code == 302
        self.token = _csrf(self.client.get("/account").get_data(as_text=True))

    def get(self, path: str, **headers: str):
        return self.client.get(path, headers={**HTML, **headers})

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)[:3000]
        return response.get_data(as_text=True)

    def post(self, path: str, data: dict | None = None):
        return self.client.post(path, data={**(data or {}), "csrf_token": self.token},
                                headers=HTML)


@pytest.fixture
def ada(app, people) -> Dashboard:
    return Dashboard(app, "ada@example.test")


@pytest.fixture
def root(app, people) -> Dashboard:
    return Dashboard(app, "root@example.test")


def _principal(user) -> Principal:
    return Principal(user, None, "session")


def _plan(slug: str = "std", price: int = 100, cap: int = 10**9) -> Plan:
    now = clock.now()
    return Plan.create(id=f"pln_{slug}", slug=slug, name=slug.title(), vcpus=1, memory_mb=512,
                       disk_gb=10, price_hourly=price, price_monthly_cap=cap, created_at=now,
                       updated_at=now)


def _node_and_image() -> tuple[Node, Image]:
    now = clock.now()
    node = Node.create(id=new_id("node"), name=new_id("n"), engine="fake", endpoint="",
                       options="{}", capacity_vcpus=1000, capacity_memory_mb=10**6,
                       capacity_disk_gb=10**6, enabled=True, simulated=True, health="healthy",
                       created_at=now, updated_at=now)
    image = Image.create(id=new_id("img"), name="debian", engine="fake", ref=new_id("ref"),
                         node=node, created_at=now, updated_at=now)
    return node, image


def _project_of(user) -> Project:
    return Project.get(Project.created_by == user.id, Project.is_default)


def _instance(user, plan: Plan, name: str = "web-1", status: str = "running",
              node_image: tuple[Node, Image] | None = None) -> Instance:
    node, image = node_image or _node_and_image()
    now = clock.now()
    return Instance.create(id=new_id("ins"), project=_project_of(user), name=name, plan=plan,
                           image=image, node=node, status=status, driver_ref="ref",
                           created_at=now, updated_at=now)


def _grant(admin, user, amount: int, note: str = "welcome") -> LedgerEntry:
    return prepaid.grant(_principal(admin), user.id, amount, note)


def _db(app):
    """An app context with its own connection (the rows and service calls of a test)."""

    class Both:
        def __enter__(self):
            self.context = app.app_context()
            self.context.__enter__()
            self.connection = database.connection_context()
            self.connection.__enter__()

        def __exit__(self, *exc):
            self.connection.__exit__(*exc)
            self.context.__exit__(*exc)

    return Both()


# 1. A large balance with a low burn rate -----------------------------------------------


def test_a_large_balance_with_a_low_burn_rate_shows_a_bounded_run_out(app, client, people,
                                                                       ada):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        for _ in range(3):
            _grant(root_user, ada_user, 1_000_000_000)
        _instance(ada_user, _plan("tiny", price=1))
        metering.tick()
        found = prepaid.overview(_principal(ada_user))
    assert found.projected_run_out_at is None and found.hours_left is None
    assert found.run_out_beyond_horizon is True
    secret, _ = create_key(client, bearer(login(client, ada_user.email)), ["billing:read"])
    response = api(client, "GET", "/billing", key_auth(secret))
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    body = response.get_json()
    assert body["projected_run_out_at"] is None and body["hours_left"] is None
    assert body["run_out_beyond_horizon"] is True
    schema = client.get("/api/v1/openapi.json").get_json()["components"]["schemas"]
    billing_out = schema["BillingOut"]["properties"]
    assert set(body) <= set(billing_out) and "run_out_beyond_horizon" in billing_out
    for path in ("/dashboard", "/billing"):
        assert "Credits last more than 10 years" in ada.page(path)


# 2. Credit lifts grace at once, and a stale out-of-credit mail is not sent ---------------


def _out_of_credit(app, ada_user) -> None:
    """A priced instance and no credit: metering takes the balance below zero and the
    enforcement starts the grace period (with its notification, mail pending)."""
    with _db(app):
        _instance(ada_user, _plan(price=100))
        metering.tick()
        prepaid.enforce()
        assert BillingAccount.get_by_id(ada_user.id).grace_started_at is not None
        assert Notification.get(Notification.type == "billing.grace_started").email_status \
            == "pending"


def _no_out_of_credit_text(html: str) -> None:
    assert "out of credit" not in html
    assert 'id="billing-status"' not in html


def test_a_grant_lifts_grace_at_once_and_the_stale_mail_is_not_sent(app, people, ada, root):
    ada_user = people["ada"]
    _out_of_credit(app, ada_user)
    assert "You are out of credit" in ada.page("/billing")
    response = root.post(f"/admin/billing/accounts/{ada_user.id}/credits",
                         {"type": "grant", "amount": "10.00", "note": "top", "confirmed": "yes"})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    with _db(app):
        assert prepaid.overview(_principal(ada_user)).status == "active"
        assert BillingAccount.get_by_id(ada_user.id).grace_started_at is None
    _no_out_of_credit_text(ada.page("/billing"))
    _no_out_of_credit_text(ada.page("/dashboard"))
    with _db(app):
        notifications.send_pending_mail()
        subjects = [m.subject for m in MailOutbox.select().where(
            MailOutbox.to_addr == ada_user.email)]
        assert "You are out of credit" not in subjects
        assert Notification.get(Notification.type == "billing.grace_started").email_status \
            == "skipped"


def test_a_promo_code_lifts_grace_and_a_balance_suspension_at_once(app, people, ada):
    ada_user, root_user = people["ada"], people["root"]
    _out_of_credit(app, ada_user)
    clock.advance(100 * H)  # past the grace period: suspended
    with _db(app):
        metering.tick()
        prepaid.enforce()
        assert BillingAccount.get_by_id(ada_user.id).suspended_at is not None
        promo.create_code(_principal(root_user), code="spring", amount=50_000)
        promo.redeem(_principal(ada_user), "spring")
        account = BillingAccount.get_by_id(ada_user.id)
        assert (account.grace_started_at, account.suspended_at) == (None, None)
        assert Instance.select().where(Instance.suspended_at.is_null(False)).count() == 0
        assert prepaid.readiness(ada_user.id).can_provision
        notifications.send_pending_mail()
        subjects = {m.subject for m in MailOutbox.select()}
        assert not subjects & {"You are out of credit", "Your account is suspended"}
    _no_out_of_credit_text(ada.page("/billing"))


def test_an_out_of_credit_mail_that_is_still_true_is_sent(app, people):
    ada_user = people["ada"]
    _out_of_credit(app, ada_user)
    with _db(app):
        notifications.send_pending_mail()
        assert MailOutbox.select().where(MailOutbox.to_addr == ada_user.email,
                                         MailOutbox.subject == "You are out of credit").exists()


# 3. The run-out follows what runs now -----------------------------------------------------


def test_the_run_out_is_estimated_from_what_runs_now_with_history_second(app, people, ada):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        _grant(root_user, ada_user, 1995)  # 19.95 EUR
        _instance(ada_user, _plan("small", price=3))  # 0.03 EUR an hour
        metering.tick()
        clock.advance(dt.timedelta(minutes=10))
        found = prepaid.overview(_principal(ada_user))
    assert found.balance == 1992
    assert found.burn_rate_per_day == 72  # 0.03 an hour for a day
    assert found.burn_rate_last_24h == 3  # the one hour recorded so far
    assert found.hours_left == pytest.approx(664, abs=0.1)
    html = ada.page("/billing")
    assert "Credits last about 28 days" in html and "399 days" not in html
    assert "0.72 EUR" in html and "0.03 EUR" in html  # now, and the last 24 hours
    assert "Credits last about 28 days" in ada.page("/dashboard")


def test_the_burn_rate_counts_kept_backups_and_skips_deleted_instances(app, people):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        _grant(root_user, ada_user, 10_000)
        plan = _plan(price=10)
        gone = _instance(ada_user, plan, "old")
        Instance.update(deleted_at=clock.now(), status="deleted").where(
            Instance.id == gone.id).execute()
        node, _ = _node_and_image()
        Backup.create(id=new_id("bak"), project=_project_of(ada_user), instance_name="old",
                      node=node, kind="final", status="available", size_gb=744,
                      created_at=clock.now(), updated_at=clock.now())
        found = prepaid.overview(_principal(ada_user))
    # BILLING_BACKUP_GB_MONTH per GB and month; March has 744 hours.
    price = metering.backup_gb_month_price()
    assert found.burn_rate_per_day == round(price * 744 * 24 / 744)


# 4. The overview's numbers say what their labels say ----------------------------------------


def test_the_overview_shows_the_instances_running_now_not_a_stale_sample(app, people, ada):
    ada_user = people["ada"]
    with _db(app):
        plan = _plan(price=0)
        made = [_instance(ada_user, plan, f"web-{n}") for n in range(3)]
        _instance(ada_user, plan, "idle", status="stopped")
        dashboard_metrics.flush_samples()
        for instance in made[:2]:
            Instance.update(deleted_at=clock.now(), status="deleted").where(
                Instance.id == instance.id).execute()
    html = ada.page("/dashboard")
    cards = html.split('id="overview-cards"', 1)[1].split("</section>", 1)[0]
    assert re.search(r'Instances</h2>\s*<p class="stat-value">2</p>', cards)
    assert "1 running" in cards
    figure = html.split('id="chart-instances"', 1)[1].split("</figcaption>", 1)[0]
    assert "<strong>1</strong>" in figure


def test_api_requests_count_key_and_token_calls_not_the_dashboards_own(app, client, people,
                                                                       ada):
    ada_user = people["ada"]
    tokens = bearer(login(client, ada_user.email))
    secret, _ = create_key(client, tokens, ["billing:read"])
    with _db(app):
        dashboard_metrics.flush_samples()  # the key's creation was one token call
    for _ in range(5):
        ada.page("/dashboard")
        stream = ada.client.get("/api/v1/events/stream")
        assert stream.status_code == 200
        stream.close()
    assert api(client, "GET", "/billing", key_auth(secret)).status_code == 200
    assert api(client, "GET", "/billing", tokens).status_code == 200
    with _db(app):
        dashboard_metrics.flush_samples()
        series = dashboard_metrics.series(_principal(ada_user), "1h", "1m")
    assert sum(p.api_requests for p in series.points) == 3  # create key, key, token


# 5. Records that say who and what ------------------------------------------------------------


def test_ledger_and_usage_rows_name_the_instance_as_it_was_then(app, people, ada):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        _grant(root_user, ada_user, 10_000)
        instance = _instance(ada_user, _plan("small", price=5), "web-1")
        metering.tick()
        Instance.update(name="shop").where(Instance.id == instance.id).execute()
        clock.advance(H)
        metering.tick()
        notes = [e.note for e in LedgerEntry.select().where(LedgerEntry.type == "usage")
                 .order_by(LedgerEntry.id)]
        names = [r.subject_name for r in UsageRecord.select().order_by(UsageRecord.id)]
        exported = "".join(usage.export_csv(_principal(ada_user)))
    assert notes == ["instance web-1 (small) 2025-03-10T12:00:00Z",
                     "instance shop (small) 2025-03-10T13:00:00Z"]
    assert names == ["web-1", "shop"]
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [r["subject_name"] for r in rows] == ["web-1", "shop"]
    html = ada.page("/billing")
    assert "instance web-1 (small)" in html
    assert "web-1" in ada.page("/usage") and "shop" in ada.page("/usage")


def test_the_audit_log_shows_who_by_email_and_filters_by_actor_email(app, people, root):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        _grant(root_user, ada_user, 500)
        prepaid.set_spend_cap(_principal(ada_user), 1000)
    html = root.page("/admin/audit")
    table = html.split("<tbody>", 1)[1]
    assert "root@example.test" in table and "ada@example.test" in table
    assert f"<code>{root_user.id}</code>" not in table
    mine = root.page("/admin/audit?actor=ADA@example.test")
    assert "billing.spend_cap_set" in mine and "billing.grant" not in mine
    assert 'name="actor" value="ADA@example.test"' in mine
    nobody = root.page("/admin/audit?actor=nobody@example.test")
    assert "Nothing recorded" in nobody
    with _db(app):
        assert AuditLog.select().count() >= 2


def test_events_rows_say_what_happened_not_only_an_id(app, people, ada):
    ada_user, root_user = people["ada"], people["root"]
    with _db(app):
        _grant(root_user, ada_user, 1234)
    html = ada.page("/events")
    row = html.split("<code>billing.credited</code>", 1)[1].split("</tr>", 1)[0]
    summary = re.search(r'<summary class="small">([^<]*)</summary>', row).group(1)
    assert "12.34 EUR" in summary and "grant" in summary
    assert not summary.startswith("evt_")


# 6. Small texts ------------------------------------------------------------------------------


def test_an_expired_promo_code_is_listed_as_expired(app, people, root):
    with _db(app):
        old = promo.create_code(_principal(people["root"]), code="old", amount=100,
                                expires_at=T0 + H)
        new = promo.create_code(_principal(people["root"]), code="new", amount=100)
        clock.advance(2 * H)
        assert promo.status_of(PromoCode.get_by_id(old.id)) == "expired"
    html = root.page("/admin/billing/promo-codes")
    rows = {p.code: html.split(f'id="promo-{p.id}"', 1)[1].split("</tr>", 1)[0]
            for p in (old, new)}
    assert ">expired<" in rows["old"] and ">active<" not in rows["old"]
    assert ">active<" in rows["new"]


def test_the_grace_banner_is_one_sentence_in_one_piece(app, people, ada):
    _out_of_credit(app, people["ada"])
    html = ada.page("/billing")
    banner = html.split('id="billing-status"', 1)[1].split("</div>", 1)[0]
    # The banner lays out its children side by side: the whole text is one child.
    inner = banner.split(">", 1)[1].strip()
    assert inner.startswith("<span") and inner.endswith("</span>")
    assert inner.count("<span") == 1
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", inner)).strip()
    assert text.startswith("You are out of credit.")
    assert re.search(r"keep running until \d{4}-\d\d-\d\d \d\d:\d\d UTC; after that they are "
                     r"stopped until you add credit\.$", text), text
    overview = ada.page("/dashboard")
    alert = overview.split('class="alert alert-warn" role="alert">', 1)[1].split("</div>", 1)[0]
    assert alert.strip().startswith("<span") and alert.strip().endswith("</span>")
    assert alert.count("<span") == 1


def test_the_limits_page_counts_kept_final_backups(app, people, ada):
    ada_user = people["ada"]
    with _db(app):
        node, _ = _node_and_image()
        for status in ("available", "available", "creating", "deleted", "failed"):
            Backup.create(id=new_id("bak"), project=_project_of(ada_user),
                          instance_name="web-1", node=node, kind="final", status=status,
                          size_gb=10, created_at=clock.now(), updated_at=clock.now(),
                          deleted_at=clock.now() if status == "deleted" else None)
    html = ada.page("/account/limits")
    row = html.split('id="limit-backups"', 1)[1].split("</tr>", 1)[0]
    assert "<strong>3</strong> of <strong>20</strong>" in row
