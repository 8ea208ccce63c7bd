"""Dashboard pages for instances and the admin pages for nodes, plans, images and apps.

A simulated node and the plans "small"/"large" come from `fake_catalog`; queued jobs run
when the test says so (`run_jobs`), so every in-between state can be looked at. Users
sign in through /signin with the CSRF flow (tests/factories.py's Browser): the owner
(Ada), a teammate (Bob), an outsider (Eve) and an administrator (Root), from
tests/conftest.py.
"""

from __future__ import annotations

import re

import pytest

from appliance.drivers.base import Capabilities
from appliance.drivers.fake import FakeDriver
from appliance.models import App, Image, Instance, Node, Plan, User
from appliance.services import clock
from appliance.web import instances as instance_pages
from tests.factories import (
    Browser,
    add_member_by_form,
    api,
    bearer,
    create_instance,
    default_project_id,
    error_next_to,
    login,
    run_jobs,
)
from tests.sshkeys import ED25519, RSA_2048

HTMX = {"HX-Request": "true"}
POLLING = 'hx-trigger="every 2s, instance-changed from:body delay:300ms"'
LIVE_ONLY = 'hx-trigger="instance-changed from:body delay:300ms"'  # live.js, no polling
MARKUP = "<b>x</b>"
MARKUP_ESCAPED = "&lt;b&gt;x&lt;/b&gt;"


@pytest.fixture
def project(app, ada):
    return default_project_id(app, "ada@example.test")


def base(project: str, instance_id: str = "") -> str:
    return f"/projects/{project}/instances" + (f"/{instance_id}" if instance_id else "")


def create(browser: Browser, project: str, catalog: dict, name: str = "web-1", **form):
    fields = {"name": name, "plan_id": "pln_small", "source": "image:" + catalog["image"],
              "password_mode": "generate", **form}
    return browser.post(base(project), fields)


def created_id(app, name: str = "web-1") -> str:
    with app.app_context():
        return Instance.get(Instance.name == name, Instance.deleted_at.is_null()).id


def password_in(page: str) -> str:
    match = re.search(r'id="new-password"[^>]*value="([^"]+)"', page, re.S)
    assert match, "no password on the page"
    return match.group(1)


def status_of(app, instance_id: str) -> tuple[str, str]:
    with app.app_context():
        instance = Instance.get_by_id(instance_id)
        return instance.status, instance.power_state


# The list -----------------------------------------------------------------------------


def test_the_list_polls_only_while_a_job_is_in_progress(app, ada, project, catalog):
    assert create(ada, project, catalog).status_code == 303  # to the password, shown once
    page = ada.page(base(project))
    assert POLLING in page and ">creating<" in page
    assert "Queued" in page and 'aria-valuenow="0"' in page  # the job's progress
    assert "simulated" in page and "Small" in page and "Debian 12 (simulated)" in page

    fragment = ada.get(base(project), headers=HTMX).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div id="instance-list"') and "<html" not in fragment
    assert POLLING in fragment

    run_jobs(app)
    fragment = ada.get(base(project), headers=HTMX).get_data(as_text=True)
    assert "every 2s" not in fragment  # nothing in progress: the last poll stops it
    assert LIVE_ONLY in fragment  # but an instance event (static/js/live.js) refreshes it
    assert ">running<" in fragment and "10.99." in fragment
    assert "every 2s" not in ada.page(base(project))


def test_the_project_page_and_the_nav_lead_to_the_instances(app, ada, project):
    assert f'href="{base(project)}"' in ada.page(f"/projects/{project}")
    assert f'href="{base(project)}"' in ada.page("/keys")  # the current project's
    assert "No instances in this project yet." in ada.page(base(project))


# Creating -----------------------------------------------------------------------------


def test_the_form_shows_plans_with_prices_images_by_engine_keys_and_what_is_left(
        app, ada, project, catalog):
    ada.post("/account/ssh-keys", {"public_key": ED25519[0], "name": "laptop"})
    page = ada.page(base(project) + "/new")
    assert "0.01 EUR" in page and "5.00 EUR" in page  # hourly / monthly cap of "small"
    assert "0.04 EUR" in page and "20.00 EUR" in page
    assert "1 vCPU &middot; 512 MB &middot; 10 GB disk" in page
    assert "fake images" in page and "Alpine 3 (simulated)" in page
    assert 'name="ssh_key_ids"' in page and "laptop" in page
    left = re.search(r'id="quota-instances">.*?<strong>(\d+)</strong> left', page, re.S)
    assert left.group(1) == "10"
    create(ada, project, catalog)
    # vCPUs and memory: tests/test_quotas.py drops the instance counter for later tests.
    page = ada.page(base(project) + "/new")
    assert re.search(r'id="quota-vcpus">.*?<strong>(\d+)</strong>', page, re.S).group(1) == "15"
    assert re.search(r'id="quota-memory_mb">.*?<strong>([^<]+)</strong>', page,
                     re.S).group(1) == "31.5 GB"


def test_creating_shows_the_generated_password_once_and_never_caches_it(app, ada, project,
                                                                         catalog):
    posted = create(ada, project, catalog)
    assert posted.status_code == 303  # post/redirect/get: a reload creates nothing
    response = ada.get(posted.headers["Location"])
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    password = password_in(page)
    assert len(password) == 20 and page.count(password) == 1
    assert "only time it is shown" in page
    instance_id = created_id(app)
    assert f'href="{base(project, instance_id)}"' in page

    shown = ada.page(base(project, instance_id))
    assert password not in shown and "Reveal once" not in shown  # acknowledged as shown
    owner = bearer(login(app.test_client(), "ada@example.test"))
    pending = api(app.test_client(), "GET", base(project, instance_id) + "/password", owner)
    assert pending.get_json() == {"password": None}


def test_a_chosen_password_is_not_shown_and_the_instance_page_follows(app, ada, project,
                                                                      catalog):
    response = create(ada, project, catalog, password_mode="set", password="hunter2hunter2")
    assert response.status_code == 302
    instance_id = created_id(app)
    assert response.headers["Location"].startswith(base(project, instance_id))
    page = ada.page(response.headers["Location"])
    assert "hunter2hunter2" not in page and "Creating the instance." in page
    assert POLLING in page  # the state card follows the create job


def test_a_bad_name_is_shown_next_to_the_field_and_the_form_keeps_its_choices(
        app, ada, project, catalog):
    response = create(ada, project, catalog, name="Web_1", plan_id="pln_large",
                      source="image:" + catalog["other_image"])
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error_next_to(page, "f-name").startswith("A name is 1-64 lowercase letters")
    assert 'value="Web_1"' in page
    assert re.search(r'value="pln_large"[^>]*checked', page, re.S)
    assert re.search(rf'value="image:{catalog["other_image"]}"[^>]*checked', page, re.S)
    with app.app_context():
        assert Instance.select().count() == 0


def test_a_too_small_plan_for_an_app_is_refused_next_to_the_plans(app, ada, project,
                                                                  catalog):
    with app.app_context():
        now = clock.now()
        App.create(id="app_wp", slug="wordpress", name="WordPress", image=catalog["image"],
                   min_vcpus=2, min_memory_mb=1024, min_disk_gb=10, created_at=now,
                   updated_at=now)
    page = ada.page(base(project) + "/new")
    assert 'value="app:wordpress"' in page and 'data-min-vcpus="2"' in page
    response = create(ada, project, catalog, source="app:wordpress")
    assert response.status_code == 400
    assert "This needs a plan with at least 2 vcpus." in re.search(
        r'<p class="error-text" role="alert" id="e-plan">([^<]*)</p>',
        response.get_data(as_text=True)).group(1)
    assert create(ada, project, catalog, source="app:wordpress",
                  plan_id="pln_large").status_code == 303


def test_a_quota_error_is_shown_above_the_form(app, ada, root, project, catalog):
    with app.app_context():
        user_id = User.get(User.email == "ada@example.test").id
    assert root.post(f"/admin/users/{user_id}/limits",
                     {"resource": "instances", "value": "0"}).status_code == 302
    response = create(ada, project, catalog)
    assert response.status_code == 403
    assert "Instances: 0 of 0 in use" in response.get_data(as_text=True)


# One instance -------------------------------------------------------------------------


def test_power_buttons_queue_jobs_and_the_page_shows_the_new_state(app, ada, project,
                                                                   catalog):
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    page = ada.page(base(project, instance_id))
    assert POLLING not in page
    for action in ("shutdown", "reboot", "stop", "reset"):
        assert f"/power/{action}" in page
    assert "/power/start" not in page  # running: start is shown disabled

    response = ada.post(base(project, instance_id) + "/power/stop")
    assert response.status_code == 302
    page = ada.page(response.headers["Location"])
    assert "Powering off" in page and POLLING in page and "/power/" not in page
    run_jobs(app)
    assert status_of(app, instance_id) == ("stopped", "stopped")
    page = ada.page(base(project, instance_id))
    assert ">stopped<" in page and "/power/start" in page and "/power/stop" not in page
    assert POLLING not in page and "instance.stopped" in page  # the timeline

    # With htmx the state card is swapped in and polls until the job is done.
    fragment = ada.post(base(project, instance_id) + "/power/start", headers=HTMX)
    assert fragment.status_code == 200
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<section class="card instance-state"')
    assert POLLING in text and "Starting" in text
    run_jobs(app)
    poll = ada.get(base(project, instance_id) + "?part=state&poll=1", headers=HTMX)
    assert "every 2s" not in poll.get_data(as_text=True)
    assert poll.headers["HX-Trigger"] == "instance-settled"  # events and console refresh
    assert status_of(app, instance_id) == ("running", "running")


def test_a_power_action_in_the_wrong_state_says_why(app, ada, project, catalog):
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    refused = ada.post(base(project, instance_id) + "/power/start")
    assert refused.status_code == 409
    assert "Cannot start an instance that is running." in refused.get_data(as_text=True)
    busy = ada.post(base(project, instance_id) + "/power/reboot")
    assert busy.status_code == 302
    again = ada.post(base(project, instance_id) + "/power/shutdown", headers=HTMX)
    assert again.status_code == 409 and again.headers["X-Error-Fragment"] == "1"
    assert "Another operation on this instance is still running" in again.get_data(
        as_text=True)


def test_a_viewer_sees_no_power_buttons_and_is_refused(app, ada, bob, project, catalog):
    add_member_by_form(ada, project, "bob@example.test", "viewer")
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    page = bob.page(base(project, instance_id))
    assert "/power/" not in page and "Reset password" not in page and "/delete" not in page
    assert "New instance" not in bob.page(base(project))
    assert bob.get(base(project) + "/new").status_code == 403
    for path in ("/power/stop", "/rename", "/delete"):
        response = bob.post(base(project, instance_id) + path,
                            {"name": "mine", "confirm_name": "web-1"})
        assert response.status_code == 403, path
    assert create(bob, project, catalog, name="web-2").status_code == 403
    assert status_of(app, instance_id) == ("running", "running")


def test_an_outsider_gets_404_everywhere(app, ada, eve, project, catalog):
    create(ada, project, catalog)
    instance_id = created_id(app)
    for path in (base(project), base(project) + "/new", base(project, instance_id)):
        response = eve.get(path)
        assert response.status_code == 404, path
        assert "web-1" not in response.get_data(as_text=True)
    assert eve.post(base(project, instance_id) + "/power/stop").status_code == 404
    assert create(eve, project, catalog, name="web-9").status_code == 404


def test_deleting_needs_the_typed_name_then_the_list_shows_it_going(app, ada, project,
                                                                   catalog):
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    wrong = ada.post(base(project, instance_id) + "/delete", {"confirm_name": "web"})
    assert wrong.status_code == 400
    assert error_next_to(wrong.get_data(as_text=True), "f-delete-confirm_name") == (
        "Type the instance&#39;s name exactly to confirm.")
    assert status_of(app, instance_id)[0] == "running"

    deleted = ada.post(base(project, instance_id) + "/delete", {"confirm_name": " web-1 "})
    assert deleted.status_code == 302 and deleted.headers["Location"].startswith(base(project))
    page = ada.page(deleted.headers["Location"])
    assert "Deleting web-1." in page and ">deleting<" in page and POLLING in page
    run_jobs(app)
    page = ada.page(base(project))
    assert "web-1" not in page and POLLING not in page
    assert ada.get(base(project, instance_id)).status_code == 404
    # A state card still polling for it is told once, and stops (htmx stops on 286).
    gone = ada.get(base(project, instance_id) + "?part=state&poll=1", headers=HTMX)
    assert gone.status_code == 286 and "No such instance." in gone.get_data(as_text=True)


def test_a_delete_can_keep_a_final_backup_shown_on_the_backups_page(app, ada, project,
                                                                     catalog):
    create(ada, project, catalog, name="keep-me")
    run_jobs(app)
    instance_id = created_id(app, "keep-me")
    assert 'name="final_backup"' in ada.page(base(project, instance_id))
    deleted = ada.post(base(project, instance_id) + "/delete",
                       {"confirm_name": "keep-me", "final_backup": "on"})
    assert deleted.status_code == 302
    run_jobs(app)
    page = ada.page(f"/projects/{project}/backups")
    assert "keep-me" in page and ">available<" in page
    backup_id = re.search(r"/backups/(bak_[0-9a-z]+)/delete", page).group(1)
    gone = ada.post(f"/projects/{project}/backups/{backup_id}/delete", {})
    assert gone.status_code == 302
    assert "No backups in this project." in ada.page(gone.headers["Location"])


def test_rename_resize_and_rebuild(app, ada, project, catalog):
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    page = ada.page(base(project, instance_id))
    resize_form = re.search(r'id="resize">.*?</section>', page, re.S).group(0)
    assert 'value="pln_large"' in resize_form and 'value="pln_small"' not in resize_form
    assert "Alpine 3 (simulated)" in re.search(r'id="rebuild">.*?</section>', page,
                                               re.S).group(0)

    bad = ada.post(base(project, instance_id) + "/rename", {"name": "No Good"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-rename-name").startswith("A name is")
    renamed = ada.post(base(project, instance_id) + "/rename", {"name": "web-2"})
    assert renamed.status_code == 302
    assert "<h1>web-2</h1>" in ada.page(renamed.headers["Location"])

    assert ada.post(base(project, instance_id) + "/resize",
                    {"plan_id": "pln_large"}).status_code == 302
    run_jobs(app)
    with app.app_context():
        assert Instance.get_by_id(instance_id).plan_id == "pln_large"
    smaller = ada.post(base(project, instance_id) + "/resize", {"plan_id": "pln_small"})
    assert smaller.status_code == 400
    assert error_next_to(smaller.get_data(as_text=True), "f-resize-plan_id") == (
        "The new plan&#39;s disk is smaller; disks cannot shrink.")

    assert ada.post(base(project, instance_id) + "/rebuild",
                    {"image_id": catalog["other_image"]}).status_code == 303  # new password
    run_jobs(app)
    page = ada.page(base(project, instance_id))
    assert "instance.rebuilt" in page and "Rebuilt from Alpine 3 (simulated)" in page


def test_passwords_reset_and_a_pending_one_is_revealed_once(app, ada, project, catalog):
    owner = bearer(login(app.test_client(), "ada@example.test"))
    instance = create_instance(app, app.test_client(), owner, project, catalog)
    path = base(project, instance["id"])
    page = ada.page(path)
    assert "Reveal once" in page  # made over the API: its password waits to be seen

    revealed = ada.get(ada.post(path + "/reveal-password").headers["Location"])
    assert revealed.status_code == 200 and revealed.headers["Cache-Control"] == "no-store"
    password = password_in(revealed.get_data(as_text=True))
    assert len(password) == 20
    assert "Reveal once" not in ada.page(path)
    again = ada.post(path + "/reveal-password")
    assert "No generated password is waiting." in ada.page(again.headers["Location"])

    reset = ada.get(ada.post(path + "/reset-password", {"password_mode": "generate"})
                    .headers["Location"])
    assert reset.status_code == 200 and reset.headers["Cache-Control"] == "no-store"
    assert password_in(reset.get_data(as_text=True)) != password
    short = ada.post(path + "/reset-password", {"password_mode": "set", "password": "short"})
    assert short.status_code == 400
    assert error_next_to(short.get_data(as_text=True), "f-password-password") == (
        "A password has 8-72 characters.")
    run_jobs(app)
    chosen = ada.post(path + "/reset-password", {"password_mode": "set",
                                                 "password": "long enough pass"})
    assert chosen.status_code == 302
    assert "Setting the new password" in ada.page(chosen.headers["Location"])


def test_ssh_keys_are_added_from_the_account_or_pasted(app, ada, project, catalog):
    ada.post("/account/ssh-keys", {"public_key": ED25519[0], "name": "laptop"})
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    path = base(project, instance_id)
    page = ada.page(path)
    key_id = re.search(r'<option value="(ssh_\w+)"[^>]*>laptop', page).group(1)
    assert ada.post(path + "/ssh-keys", {"ssh_key_id": key_id}).status_code == 302
    run_jobs(app)
    bad = ada.post(path + "/ssh-keys", {"public_key": "ssh-ed25519 nope"})
    assert bad.status_code == 400
    assert "error-text" in bad.get_data(as_text=True)
    assert ada.post(path + "/ssh-keys", {"public_key": RSA_2048[0]}).status_code == 302
    run_jobs(app)
    engine = FakeDriver("fake://tests")
    with app.app_context():
        ref = Instance.get_by_id(instance_id).driver_ref
    on_engine = engine._node["instances"][ref]["ssh_keys"]
    assert [key.split()[:2] for key in on_engine] == [ED25519[0].split()[:2],
                                                     RSA_2048[0].split()[:2]]


def test_events_are_paged_and_the_console_log_is_shown(app, ada, project, catalog,
                                                       monkeypatch):
    monkeypatch.setattr(instance_pages, "EVENTS_PER_PAGE", 2)
    create(ada, project, catalog)
    run_jobs(app)
    instance_id = created_id(app)
    ada.post(base(project, instance_id) + "/power/reboot")
    run_jobs(app)
    page = ada.page(base(project, instance_id))
    assert page.count('<code class="event-type">') == 2
    more = re.search(r'href="([^"]*events_cursor=[^"#]+)#events"', page).group(1)
    older = ada.page(more.replace("&amp;", "&"))
    assert "instance.created" in older and "Newest" in older
    console = re.search(r'<pre class="console" data-log-stream="[^"]+/logs/stream">([^<]*)'
                        r'</pre>', page).group(1)  # followed live by console.js
    assert "created from fake/debian-12" in console and "rebooted" in console
    fragment = ada.get(base(project, instance_id) + "?part=console", headers=HTMX)
    assert fragment.get_data(as_text=True).lstrip().startswith('<section class="card" id="console"')

    monkeypatch.setattr(FakeDriver, "capabilities", lambda self: Capabilities(console=False))
    page = ada.page(base(project, instance_id))
    assert "Not available on this engine." in page and 'class="console"' not in page


# Admin --------------------------------------------------------------------------------


ADMIN_PAGES = ("/admin/nodes", "/admin/plans", "/admin/images", "/admin/apps")


def test_admin_pages_render_for_administrators_only(app, ada, root, catalog):
    for path in ADMIN_PAGES:
        page = root.page(path)
        assert 'aria-current="page">' + path.rsplit("/", 1)[1].title() + "</a>" in page, path
        assert ada.get(path).status_code == 403, path
        assert ada.post(path, {"name": "x"}).status_code == 403, path
    assert app.test_client().get("/admin/nodes").status_code == 302  # sign in first


def test_an_admin_registers_a_fake_node_checks_disables_and_removes_it(app, root):
    bad = root.post("/admin/nodes", {"name": "n", "engine": "fake", "endpoint": "ftp://x",
                                     "capacity_vcpus": "4", "capacity_memory_mb": "4096",
                                     "capacity_disk_gb": "100"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-register-endpoint").startswith(
        "endpoint is a unix:///path")
    no_number = root.post("/admin/nodes", {"name": "n", "engine": "fake", "endpoint": "",
                                           "capacity_vcpus": "four"})
    assert error_next_to(no_number.get_data(as_text=True),
                         "f-register-capacity_vcpus") == "Enter a whole number."

    response = root.post("/admin/nodes", {
        "name": f"rack {MARKUP}", "engine": "fake", "endpoint": "fake://x",
        "capacity_vcpus": "8", "capacity_memory_mb": "16384", "capacity_disk_gb": "200",
        "options": "# TLS\nregion = lab\n", "enabled": "on"})
    assert response.status_code == 302
    page = root.page(response.headers["Location"])
    assert "Node registered and checked." in page
    assert f"rack {MARKUP_ESCAPED}" in page and MARKUP not in page
    assert ">healthy<" in page and ">simulated<" in page and "1.0" in page
    assert "8 vCPUs &middot; 16 GB &middot; 200 GB disk" in page
    with app.app_context():
        node = Node.get(Node.endpoint == "fake://x")
        assert node.options == '{"region": "lab"}'
        assert Image.select().where(Image.node == node).count() == 2  # discovered

    node_path = f"/admin/nodes/{node.id}"
    checked = root.post(node_path + "/check")
    assert f"rack {MARKUP_ESCAPED} is healthy." in root.page(checked.headers["Location"])
    assert root.post(node_path + "/enabled").status_code == 302
    page = root.page("/admin/nodes")
    assert ">disabled<" in page and "Enable</button>" in page
    edited = root.post(node_path + "/edit", {"name": "rack-2", "capacity_vcpus": "4",
                                             "capacity_memory_mb": "8192",
                                             "capacity_disk_gb": "100"})
    assert "4 vCPUs &middot; 8 GB &middot; 100 GB disk" in root.page(
        edited.headers["Location"])
    assert root.post(node_path + "/delete").status_code == 302
    assert "rack-2" not in root.page("/admin/nodes")


def test_the_nodes_page_shows_free_capacity_and_unknown_instances(app, ada, root, project,
                                                                  catalog):
    create(ada, project, catalog)
    run_jobs(app)
    with app.app_context():
        Node.update(unknown_instances='["ins-stranger"]').where(
            Node.id == catalog["node"]).execute()
    page = root.page("/admin/nodes")
    # free: 64 vCPUs x 4 (the default overcommit) less 1; memory and disk 1x
    assert "255 vCPUs &middot; 63.5 GB &middot; 990 GB disk" in page
    assert "<code>ins-stranger</code>" in page and "left untouched" in page
    refused = root.post(f"/admin/nodes/{catalog['node']}/delete")
    assert refused.status_code == 409
    assert "The node still runs 1 instance;" in refused.get_data(as_text=True)


def test_an_admin_creates_edits_deactivates_and_deletes_plans(app, ada, root, project,
                                                              catalog):
    bad = root.post("/admin/plans", {"slug": "tiny", "name": "Tiny", "vcpus": "1",
                                     "memory_mb": "256", "disk_gb": "5",
                                     "price_hourly": "0.005", "price_monthly_cap": "2"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-create-price_hourly").startswith(
        "Enter an amount in EUR like 0.05")
    response = root.post("/admin/plans", {
        "slug": "tiny", "name": f"Tiny {MARKUP}", "vcpus": "1", "memory_mb": "256",
        "disk_gb": "5", "price_hourly": "0.02", "price_monthly_cap": "9,50", "active": "on"})
    assert response.status_code == 302
    page = root.page(response.headers["Location"])
    assert f"Tiny {MARKUP_ESCAPED}" in page and MARKUP not in page
    assert "0.02 EUR" in page and "9.50 EUR" in page
    with app.app_context():
        plan = Plan.get(Plan.slug == "tiny")
        assert (plan.price_hourly, plan.price_monthly_cap, plan.active) == (2, 950, True)
    assert f"Tiny {MARKUP_ESCAPED}" in ada.page(base(project) + "/new")

    taken = root.post("/admin/plans", {"slug": "tiny", "name": "Again", "vcpus": "1",
                                       "memory_mb": "256", "disk_gb": "5",
                                       "price_hourly": "0", "price_monthly_cap": "0"})
    assert taken.status_code == 409
    assert error_next_to(taken.get_data(as_text=True), "f-create-slug") == (
        "A plan with this slug exists.")

    edited = root.post(f"/admin/plans/{plan.id}/edit", {
        "name": "Tiny", "vcpus": "2", "memory_mb": "512", "disk_gb": "5",
        "price_hourly": "0.03", "price_monthly_cap": "10"})
    assert edited.status_code == 302
    with app.app_context():
        assert Plan.get_by_id(plan.id).vcpus == 2
    assert root.post(f"/admin/plans/{plan.id}/active").status_code == 302
    assert "Tiny" not in ada.page(base(project) + "/new")
    assert root.post(f"/admin/plans/{plan.id}/delete").status_code == 302
    with app.app_context():
        assert not Plan.select().where(Plan.slug == "tiny").exists()

    create(ada, project, catalog)
    in_use = root.post("/admin/plans/pln_small/delete")
    assert in_use.status_code == 409
    assert "deactivate it instead" in in_use.get_data(as_text=True)


def test_an_admin_registers_edits_and_deactivates_images(app, ada, root, project, catalog):
    page = root.page("/admin/images")
    assert "Debian 12 (simulated)" in page and "discovered on fake" in page
    response = root.post("/admin/images", {
        "engine": "docker", "ref": "nginx:1.27", "name": f"nginx {MARKUP}",
        "family": "nginx", "version": "1.27", "min_disk_gb": "1", "default_user": "root",
        "description": "A web server", "active": "on"})
    assert response.status_code == 302
    page = root.page(response.headers["Location"])
    assert f"nginx {MARKUP_ESCAPED}" in page and "on every docker node" in page
    with app.app_context():
        image = Image.get(Image.ref == "nginx:1.27")
    empty = root.post("/admin/images", {"engine": "docker", "ref": "  ", "name": "nothing",
                                        "min_disk_gb": "1", "default_user": "root"})
    assert empty.status_code == 400
    assert error_next_to(empty.get_data(as_text=True), "f-register-ref") == (
        "This cannot be empty.")
    edited = root.post(f"/admin/images/{image.id}/edit", {
        "name": "nginx", "family": "nginx", "version": "1.27", "min_disk_gb": "2",
        "default_user": "www", "description": ""})
    assert edited.status_code == 302
    with app.app_context():
        assert (Image.get_by_id(image.id).min_disk_gb, Image.get_by_id(image.id).default_user) \
            == (2, "www")
    assert "docker images" in ada.page(base(project) + "/new")
    assert root.post(f"/admin/images/{image.id}/active").status_code == 302
    assert "docker images" not in ada.page(base(project) + "/new")


def test_an_admin_creates_edits_and_deletes_apps(app, ada, root, project, catalog):
    bad = root.post("/admin/apps", {"slug": "wp", "image_id": catalog["image"],
                                    "name": "WordPress", "env": "JUST A LINE",
                                    "min_vcpus": "1", "min_memory_mb": "512",
                                    "min_disk_gb": "5"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-create-env") == (
        "Line 1 is not KEY=value.")
    response = root.post("/admin/apps", {
        "slug": "wp", "image_id": catalog["image"], "name": f"WordPress {MARKUP}",
        "description": "Blog", "env": "WP_DEBUG=false\n\nWP_LANG = en", "min_vcpus": "2",
        "min_memory_mb": "1024", "min_disk_gb": "10", "active": "on"})
    assert response.status_code == 302
    page = root.page(response.headers["Location"])
    assert f"WordPress {MARKUP_ESCAPED}" in page and MARKUP not in page
    assert "WP_DEBUG=false" in page and "WP_LANG=en" in page
    new_form = ada.page(base(project) + "/new")
    assert f"WordPress {MARKUP_ESCAPED}" in new_form and MARKUP not in new_form

    edited = root.post("/admin/apps/wp/edit", {
        "name": "WordPress", "description": "", "env": "WP_DEBUG=true", "min_vcpus": "1",
        "min_memory_mb": "512", "min_disk_gb": "5"})
    assert edited.status_code == 302
    with app.app_context():
        app_row = App.get(App.slug == "wp")
        assert (app_row.env, app_row.active) == ('{"WP_DEBUG": "true"}', False)
    assert "app:wp" not in ada.page(base(project) + "/new")
    assert root.post("/admin/apps/wp/delete").status_code == 302
    assert "WordPress" not in root.page("/admin/apps")
