"""Dashboard pages for projects, members, API keys, SSH keys and limits (test client).

Three standing users: the owner (Ada), a teammate (Bob) and an outsider (Eve); the
administrator (Root) where a page needs one. Each signs in through /signin with the
CSRF cookie flow, as a browser does.
"""

from __future__ import annotations

import datetime as dt
import re

from appliance.models import ApiKey
from appliance.services import clock
from tests.factories import (
    EVIL,
    EVIL_ESCAPED,
    Browser,
    add_member_by_form,
    api,
    default_project_id,
    error_next_to,
    make_user,
)
from tests.sshkeys import ED25519

HTMX = {"HX-Request": "true"}


def create_project(browser: Browser, name: str = "Lab") -> str:
    response = browser.post("/projects", {"name": name})
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.match(r"/projects/(prj_\w+)\?", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def secret_in(page: str) -> str:
    match = re.search(r'id="new-secret"[^>]*value="(sk_[^"]+)"', page, re.S)
    assert match, "no secret on the page"
    return match.group(1)


# Pages ----------------------------------------------------------------------------


def test_every_page_renders_and_the_nav_links_to_them(app, ada):
    project_id = default_project_id(app, "ada@example.test")
    for path in ("/projects", f"/projects/{project_id}", "/keys", "/account/ssh-keys",
                 "/account/limits"):
        page = ada.page(path)
        assert 'href="/projects"' in page and 'href="/keys"' in page
    account = ada.page("/account")
    assert 'href="/account/ssh-keys"' in account and 'href="/account/limits"' in account


def test_the_pages_need_a_session(client):
    for path in ("/projects", "/keys", "/account/ssh-keys", "/account/limits",
                 "/projects/prj_x"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/signin?next=")


def test_the_projects_page_lists_your_projects_with_role_and_member_count(app, ada, bob):
    project_id = create_project(ada, "Lab")
    add_member_by_form(ada, project_id, "bob@example.test", "viewer")
    page = bob.page("/projects")
    row = re.search(rf'<tr>\s*<td><a href="/projects/{project_id}">.*?</tr>', page, re.S)
    assert row and "Lab" in row.group(0)
    cells = re.findall(r"<td>([^<]*)</td>", row.group(0))
    assert cells[:2] == ["viewer", "2"]
    assert "Default project" in page


# Projects -------------------------------------------------------------------------


def test_a_project_is_created_renamed_and_deleted_once_its_name_is_typed(ada):
    project_id = create_project(ada, "Lab")
    page = ada.page(f"/projects/{project_id}")
    assert "<h1>Lab</h1>" in page and "Project created" not in page
    noticed = ada.page(f"/projects/{project_id}?notice=Project+created.")
    assert noticed.count("Project created.") == 1

    assert ada.post(f"/projects/{project_id}/rename", {"name": "Rack 2"}).status_code == 302
    assert "<h1>Rack 2</h1>" in ada.page(f"/projects/{project_id}")

    wrong = ada.post(f"/projects/{project_id}/delete", {"confirm_name": "Rack"})
    assert wrong.status_code == 400
    assert error_next_to(wrong.get_data(as_text=True), "f-delete-confirm_name") == (
        "Type the project&#39;s name exactly to confirm.")
    assert ada.get(f"/projects/{project_id}").status_code == 200

    deleted = ada.post(f"/projects/{project_id}/delete", {"confirm_name": " Rack  2 "})
    assert deleted.status_code == 302 and deleted.headers["Location"].startswith("/projects?")
    assert "Rack 2" not in ada.page("/projects")
    assert ada.get(f"/projects/{project_id}").status_code == 404


def test_a_rename_to_nothing_shows_the_error_next_to_the_name(ada):
    project_id = create_project(ada)
    response = ada.post(f"/projects/{project_id}/rename", {"name": "   "})
    assert response.status_code == 400
    assert error_next_to(response.get_data(as_text=True), "f-rename-name") == (
        "A project needs a name.")


def test_the_default_project_cannot_be_deleted_and_the_page_says_why(app, ada):
    project_id = default_project_id(app, "ada@example.test")
    page = ada.page(f"/projects/{project_id}")
    assert "cannot be deleted" in page
    assert f'action="/projects/{project_id}/delete"' not in page
    refused = ada.post(f"/projects/{project_id}/delete", {"confirm_name": "Default project"})
    assert refused.status_code == 409
    assert "The default project cannot be deleted; rename it instead." in (
        refused.get_data(as_text=True))
    assert ada.get(f"/projects/{project_id}").status_code == 200


def test_an_admin_adds_a_member_changes_the_role_and_removes_them(app, ada, bob, users):
    project_id = create_project(ada)
    response = add_member_by_form(ada, project_id, "bob@example.test", "member")
    assert response.status_code == 302
    page = ada.page(response.headers["Location"])
    assert "bob@example.test added as member." in page
    assert 'aria-label="Role of bob@example.test"' in page
    assert "Lab" in bob.page("/projects")

    bob_id = users["bob"].id
    changed = ada.post(f"/projects/{project_id}/members/{bob_id}/role", {"role": "admin"})
    assert changed.status_code == 302
    assert "bob@example.test is now admin." in ada.page(changed.headers["Location"])
    assert "Add a member" in bob.page(f"/projects/{project_id}")

    removed = ada.post(f"/projects/{project_id}/members/{bob_id}/remove")
    assert removed.status_code == 302
    assert bob.get(f"/projects/{project_id}").status_code == 404


def test_with_htmx_the_members_card_is_swapped_in_place(app, ada, bob):
    project_id = create_project(ada)
    response = ada.post(f"/projects/{project_id}/members",
                        {"email": "bob@example.test", "role": "viewer"}, HTMX)
    assert response.status_code == 200
    fragment = response.get_data(as_text=True)
    assert fragment.lstrip().startswith('<section class="card" id="members">')
    assert "<html" not in fragment and "bob@example.test added as viewer." in fragment

    unknown = ada.post(f"/projects/{project_id}/members",
                       {"email": "nobody@example.test", "role": "member"}, HTMX)
    assert unknown.status_code == 400
    assert unknown.headers["X-Error-Fragment"] == "1"  # base.html swaps it in
    assert error_next_to(unknown.get_data(as_text=True), "f-add-member-email").startswith(
        "No account has this email address")


def test_adding_an_unknown_email_shows_the_error_next_to_the_field(ada):
    project_id = create_project(ada)
    response = add_member_by_form(ada, project_id, "nobody@example.test")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error_next_to(page, "f-add-member-email").startswith("No account has this email")
    assert 'value="nobody@example.test"' in page


def test_a_viewer_sees_no_management_forms_and_is_refused_if_they_post(app, ada, bob, eve):
    project_id = create_project(ada)
    add_member_by_form(ada, project_id, "bob@example.test", "viewer")
    page = bob.page(f"/projects/{project_id}")
    assert "Add a member" not in page and "/rename" not in page and "/delete" not in page
    assert "/role" not in page and "/remove" not in page and "restricted to this" not in page
    assert f'action="/projects/{project_id}/leave"' in page

    for path, form in ((f"/projects/{project_id}/rename", {"name": "Mine now"}),
                       (f"/projects/{project_id}/members",
                        {"email": "eve@example.test", "role": "viewer"}),
                       (f"/projects/{project_id}/delete", {"confirm_name": "Lab"})):
        response = bob.post(path, form)
        assert response.status_code == 403, path
        assert "role in the project" in response.get_data(as_text=True)
    assert "<h1>Lab</h1>" in ada.page(f"/projects/{project_id}")
    assert "Lab" not in eve.page("/projects")


def test_an_outsider_gets_404_for_another_users_project(ada, eve):
    project_id = create_project(ada, "Secret lab")
    response = eve.get(f"/projects/{project_id}")
    assert response.status_code == 404
    page = response.get_data(as_text=True)
    assert "No such project." in page and "Secret lab" not in page
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert eve.post(f"/projects/{project_id}/rename", {"name": "x"}).status_code == 404
    assert eve.post(f"/projects/{project_id}/leave").status_code == 404


def test_a_member_leaves_but_the_last_owner_cannot(ada, bob):
    project_id = create_project(ada)
    add_member_by_form(ada, project_id, "bob@example.test", "member")
    left = bob.post(f"/projects/{project_id}/leave")
    assert left.status_code == 302 and left.headers["Location"].startswith("/projects?")
    assert "Lab" not in bob.page("/projects")

    refused = ada.post(f"/projects/{project_id}/leave")
    assert refused.status_code == 409
    assert "keeps at least one owner" in refused.get_data(as_text=True)


def test_project_admins_see_and_revoke_the_keys_restricted_to_the_project(app, ada, bob):
    project_id = create_project(ada)
    add_member_by_form(ada, project_id, "bob@example.test", "member")
    created = bob.post("/keys", {"name": "Bob's deploy", "scopes": ["instances:read"],
                                 "project_id": project_id, "expires_in": "never"},
                      follow=True)
    assert created.status_code == 200
    secret = secret_in(created.get_data(as_text=True))
    assert "restricted to this project" not in bob.page(f"/projects/{project_id}")

    page = ada.page(f"/projects/{project_id}")
    assert "Bob&#39;s deploy" in page and "bob@example.test" in page
    with app.app_context():
        key_id = ApiKey.get(ApiKey.name == "Bob's deploy").id
    revoked = ada.post(f"/projects/{project_id}/keys/{key_id}/revoke", headers=HTMX)
    assert revoked.status_code == 200
    fragment = revoked.get_data(as_text=True)
    assert 'id="project-keys"' in fragment and ">revoked<" in fragment
    refused = api(app.test_client(), "GET", "/projects", {"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401


def test_the_switcher_shows_the_current_project_and_all_of_yours(app, ada):
    lab = create_project(ada, "Lab")
    default = default_project_id(app, "ada@example.test")

    def current(page: str) -> str:
        return re.search(r'<span class="switcher-name"[^>]*>([^<]*)</span>', page).group(1)

    overview = ada.page("/dashboard")
    assert current(overview) == "Default project"
    assert f'href="/projects/{lab}"' in overview and f'href="/projects/{default}"' in overview
    assert current(ada.page(f"/projects/{lab}")) == "Lab"
    assert current(ada.page("/keys")) == "Default project"
    assert "switcher" not in app.test_client().get("/").get_data(as_text=True)


# API keys -------------------------------------------------------------------------


def test_a_new_key_shows_its_secret_once_and_the_list_never_does(app, ada):
    response = ada.post("/keys", {"name": "CI", "scopes": ["instances:read", "usage:read"],
                                  "expires_in": "30", "allowed_ips": "127.0.0.1\n10.0.0.0/8",
                                  "rate_limit_rpm": "120"}, follow=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    secret = secret_in(page)
    assert page.count(secret) == 1
    assert "only time it is shown" in page
    assert [r.status_code for r in response.history] == [302]  # a reload creates nothing
    assert secret not in response.history[0].headers["Location"]  # never in a URL

    listing = ada.get("/keys")
    assert "no-store" not in listing.headers.get("Cache-Control", "")
    listed = listing.get_data(as_text=True)
    assert secret not in listed and 'id="new-secret"' not in listed
    assert f"{secret[:11]}&hellip;{secret[-4:]}" in listed
    assert "127.0.0.1/32, 10.0.0.0/8" in listed and "120 per minute" in listed
    assert "instances:read" in listed and "usage:read" in listed

    me = api(app.test_client(), "GET", "/projects", {"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200


def test_key_form_errors_show_next_to_their_field(ada):
    cases = (({"name": "x", "expires_in": "never"}, "scopes", "Choose at least one scope."),
             ({"name": "x", "scopes": ["usage:read"], "allowed_ips": "not-an-ip"},
              "allowed_ips", "&#39;not-an-ip&#39; is not an IP address or CIDR network."),
             ({"name": "x", "scopes": ["usage:read"], "rate_limit_rpm": "lots"},
              "rate_limit_rpm", "Enter a whole number."),
             ({"name": "", "scopes": ["usage:read"]}, "name", "A key needs a name."))
    for form, field, message in cases:
        response = ada.post("/keys", form)
        assert response.status_code == 400, field
        page = response.get_data(as_text=True)
        assert message in page, field
        assert 'id="new-secret"' not in page
    past = ada.post("/keys", {"name": "x", "scopes": ["usage:read"], "expires_in": "date",
                              "expires_on": "2001-01-01"})
    assert past.status_code == 400
    assert "expires_at must be in the future." in past.get_data(as_text=True)


def test_the_admin_scope_is_offered_to_administrators_only(ada, root):
    assert 'value="admin"' not in ada.page("/keys")
    assert 'value="admin"' in root.page("/keys")
    refused = ada.post("/keys", {"name": "x", "scopes": ["admin"]})
    assert refused.status_code == 400
    assert "Only administrators" in refused.get_data(as_text=True)


def test_the_expiry_picker_gives_days_a_date_or_never(app, ada):
    now = clock.now().replace(microsecond=0)
    clock.freeze(now)
    day = (now + dt.timedelta(days=45)).date()
    for name, form in (("thirty", {"expires_in": "30"}), ("never", {"expires_in": "never"}),
                       ("dated", {"expires_in": "date", "expires_on": day.isoformat()})):
        response = ada.post("/keys", {"name": name, "scopes": ["usage:read"], **form},
                            follow=True)
        assert response.status_code == 200, response.get_data(as_text=True)
    with app.app_context():
        expiry = {k.name: k.expires_at for k in ApiKey.select()}
    assert expiry["thirty"] == now + dt.timedelta(days=30)
    assert expiry["never"] is None
    # Through the chosen day: it stops at the midnight (UTC) that ends it.
    assert expiry["dated"] == dt.datetime.combine(day + dt.timedelta(days=1), dt.time(),
                                                  dt.UTC)


def test_a_key_is_revoked_and_then_refused(app, ada):
    secret = secret_in(ada.post("/keys", {"name": "old", "scopes": ["usage:read"]},
                                follow=True).get_data(as_text=True))
    with app.app_context():
        key_id = ApiKey.get(ApiKey.name == "old").id
    response = ada.post(f"/keys/{key_id}/revoke")
    assert response.status_code == 302
    page = ada.page(response.headers["Location"])
    assert "Key old revoked." in page and ">revoked<" in page
    assert f"/keys/{key_id}/rotate" not in page
    refused = api(app.test_client(), "GET", "/projects", {"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401

    again = ada.post(f"/keys/{key_id}/revoke", headers=HTMX)
    assert again.status_code == 200 and 'id="key-list"' in again.get_data(as_text=True)


def test_rotating_shows_the_new_secret_and_the_old_one_works_for_the_grace(app, ada):
    clock.freeze(clock.now())
    old = secret_in(ada.post("/keys", {"name": "ci", "scopes": ["usage:read"],
                                       "expires_in": "never"}, follow=True)
                 .get_data(as_text=True))
    with app.app_context():
        key_id = ApiKey.get(ApiKey.name == "ci").id
    response = ada.post(f"/keys/{key_id}/rotate", {"grace_seconds": "3600"}, follow=True)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    new = secret_in(response.get_data(as_text=True))
    assert new != old and "Key ci has a new secret." in response.get_data(as_text=True)
    other = app.test_client()
    assert api(other, "GET", "/projects", {"Authorization": f"Bearer {old}"}).status_code == 200
    clock.advance(dt.timedelta(hours=1, seconds=1))
    assert api(other, "GET", "/projects", {"Authorization": f"Bearer {old}"}).status_code == 401
    assert api(other, "GET", "/projects", {"Authorization": f"Bearer {new}"}).status_code == 200


def test_another_users_key_cannot_be_revoked_or_rotated(app, ada, eve):
    ada.post("/keys", {"name": "mine", "scopes": ["usage:read"]})
    with app.app_context():
        key_id = ApiKey.get(ApiKey.name == "mine").id
    assert eve.post(f"/keys/{key_id}/revoke").status_code == 404
    assert eve.post(f"/keys/{key_id}/rotate", {"grace_seconds": "0"}).status_code == 404
    assert ">active<" in ada.page("/keys")


# SSH keys -------------------------------------------------------------------------


def test_a_malformed_ssh_key_is_refused_next_to_the_field(ada):
    response = ada.post("/account/ssh-keys", {"public_key": "ssh-ed25519 not-base64!"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert error_next_to(page, "f-add-public_key") == (
        "Not a valid OpenSSH public key: the key data is not base64.")
    assert "ssh-ed25519 not-base64!</textarea>" in page  # kept to fix


def test_an_ssh_key_is_added_listed_and_deleted(app, ada):
    key, fingerprint = ED25519
    added = ada.post("/account/ssh-keys", {"public_key": key, "name": ""})
    assert added.status_code == 302
    page = ada.page(added.headers["Location"])
    assert "SSH key alice@laptop added." in page
    assert fingerprint in page and "ssh-ed25519" in page and "<td>256</td>" in page

    duplicate = ada.post("/account/ssh-keys", {"public_key": key})
    assert duplicate.status_code == 409
    assert "already on your account" in duplicate.get_data(as_text=True)

    key_id = re.search(r'/account/ssh-keys/(ssh_\w+)/delete', page).group(1)
    deleted = ada.post(f"/account/ssh-keys/{key_id}/delete")
    assert deleted.status_code == 302
    assert fingerprint not in ada.page("/account/ssh-keys")


# Limits ---------------------------------------------------------------------------


def test_the_limits_page_shows_use_limit_and_overrides(ada):
    ada.post("/keys", {"name": "one", "scopes": ["usage:read"]})
    page = ada.page("/account/limits")
    row = re.search(r"<td>API keys</td>.*?</tr>", page, re.S).group(0)
    assert "<strong>1</strong> of <strong>25</strong> keys" in row and "pct-4" in row
    assert "overridden" not in row


def test_a_limit_request_approved_by_an_admin_raises_the_limit(app, ada, root):
    bad = ada.post("/account/limits/requests", {"resource": "api_keys", "requested": "5"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-request-requested") == (
        "Your limit is already 25; ask for more than that.")

    asked = ada.post("/account/limits/requests", {"resource": "api_keys", "requested": "40",
                                                  "reason": "One per CI runner"})
    assert asked.status_code == 302
    page = ada.page("/account/limits")
    assert "One per CI runner" in page and ">pending<" in page

    queue = root.page("/admin/limits")
    assert "ada@example.test" in queue and "One per CI runner" in queue
    request_id = re.search(r'/admin/limits/requests/(lrq_\w+)/approve', queue).group(1)
    approved = root.post(f"/admin/limits/requests/{request_id}/approve?status=pending",
                         {"note": "Enjoy"})
    assert approved.status_code == 302
    assert "Request approved." in root.page(approved.headers["Location"])
    assert "ada@example.test" not in root.page("/admin/limits")  # no longer pending
    assert "ada@example.test" in root.page("/admin/limits?status=approved")

    page = ada.page("/account/limits")
    row = re.search(r"<td>API keys</td>.*?</tr>", page, re.S).group(0)
    assert "of <strong>40</strong> keys" in row and "overridden" in row
    assert ">approved<" in page and "Enjoy" in page


def test_a_declined_request_leaves_the_limit(ada, root):
    ada.post("/account/limits/requests", {"resource": "instances", "requested": "50"})
    request_id = re.search(r'/admin/limits/requests/(lrq_\w+)/decline',
                           root.page("/admin/limits")).group(1)
    assert root.post(f"/admin/limits/requests/{request_id}/decline",
                     {"note": "Not now"}).status_code == 302
    again = root.post(f"/admin/limits/requests/{request_id}/approve")
    assert again.status_code == 409
    page = ada.page("/account/limits")
    assert ">declined<" in page and "Not now" in page
    assert "overridden" not in page


def test_admin_sets_the_defaults_and_overrides_one_users_limit(app, ada, root, users):
    saved = root.post("/admin/limits/defaults", {"instances": "3", "vcpus": "",
                                                 "api_keys": "30"})
    assert saved.status_code == 302
    assert 'value="3"' in root.page("/admin/limits")
    bad = root.post("/admin/limits/defaults", {"backups": "-1"})
    assert bad.status_code == 400
    assert error_next_to(bad.get_data(as_text=True), "f-defaults-backups") == (
        "A limit is between 0 and 1000000.")

    user_id = users["ada"].id
    page = root.page(f"/admin/users/{user_id}")
    assert "Default project" in page and 'placeholder="30"' in page
    assert root.post(f"/admin/users/{user_id}/limits",
                     {"resource": "api_keys", "value": "7"}).status_code == 302
    assert re.search(r"<td>API keys</td>.*?of <strong>7</strong> keys", ada.page("/account/limits"),
                     re.S)
    assert root.post(f"/admin/users/{user_id}/limits",
                     {"resource": "api_keys", "value": ""}).status_code == 302
    assert "overridden" not in ada.page("/account/limits")
    wrong = root.post(f"/admin/users/{user_id}/limits", {"resource": "api_keys",
                                                         "value": "x"})
    assert wrong.status_code == 400
    assert error_next_to(wrong.get_data(as_text=True), "f-limit-api_keys") == (
        "Enter a whole number.")


def test_the_admin_limits_page_is_for_administrators(ada):
    assert ada.get("/admin/limits").status_code == 403
    assert ada.post("/admin/limits/defaults", {"instances": "100"}).status_code == 403


# Escaping -------------------------------------------------------------------------


def test_user_controlled_strings_are_escaped(app, ada, bob, root):
    project_id = create_project(ada, EVIL)
    add_member_by_form(ada, project_id, "bob@example.test")
    ada.post("/keys", {"name": EVIL, "scopes": ["usage:read"], "project_id": project_id})
    ada.post("/account/ssh-keys", {"public_key": ED25519[0], "name": EVIL})
    ada.post("/account/limits/requests", {"resource": "backups", "requested": "99",
                                          "reason": EVIL})
    user_id = make_user(app, "mallory@example.test", display_name=EVIL).id
    pages = [ada.page(path) for path in ("/projects", f"/projects/{project_id}", "/keys",
                                         "/account/ssh-keys", "/account/limits",
                                         "/dashboard")]
    pages += [bob.page(f"/projects/{project_id}"), root.page("/admin/limits"),
              root.page(f"/admin/users/{user_id}")]
    for page in pages:
        assert EVIL not in page
    assert all(EVIL_ESCAPED in page for page in pages)


def test_the_key_form_offers_no_scope_of_what_is_not_built(ada):
    page = ada.page("/keys")
    assert 'value="instances:read"' in page
    assert 'value="networks:write"' not in page  # firewalls and networks: not built yet
