"""The dashboard's sign-in pages, sessions and CSRF protection, through the test client."""

import datetime as dt
import re

from appliance.services import clock
from tests.factories import PASSWORD, csrf_from, make_user, sign_in


def test_signing_in_sets_a_strict_session_cookie_and_opens_the_dashboard(app, client):
    make_user(app, "ada@example.test", display_name="Ada")
    response = sign_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/dashboard"
    cookie = next(h for h in response.headers.getlist("Set-Cookie")
                  if h.startswith("appliance_session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/dashboard").get_data(as_text=True)
    assert "Hello, Ada" in page


def test_a_wrong_password_shows_the_form_again_with_the_message(app, client):
    make_user(app, "ada@example.test")
    response = sign_in(client, password="not my password")
    assert response.status_code == 401
    page = response.get_data(as_text=True)
    assert "The email address or password is wrong." in page
    assert 'value="ada@example.test"' in page


def test_a_post_without_the_csrf_token_is_refused(app, client):
    make_user(app, "ada@example.test")
    response = client.post("/signin", data={"email": "ada@example.test", "password": PASSWORD},
                           headers={"Accept": "text/html"})
    assert response.status_code == 403
    assert "csrf_failed" in response.get_data(as_text=True)
    sign_in(client)
    page = client.get("/account").get_data(as_text=True)
    forged = client.post("/account/password", data={
        "current_password": PASSWORD, "new_password": "a whole new passphrase",
        "csrf_token": "forged"})
    assert forged.status_code == 403
    real = client.post("/account/password", data={
        "current_password": PASSWORD, "new_password": "a whole new passphrase",
        "csrf_token": csrf_from(page)})
    assert real.status_code == 302


def test_htmx_may_send_the_csrf_token_as_a_header(app, client):
    make_user(app, "ada@example.test")
    sign_in(client)
    page = client.get("/account").get_data(as_text=True)
    token = re.search(r'"X-CSRF-Token": "([^"]+)"', page).group(1)
    response = client.post("/account/sessions/revoke-others",
                           headers={"X-CSRF-Token": token, "HX-Request": "true"})
    assert response.status_code == 302


def test_pages_need_a_session_and_remember_where_you_were_going(client):
    response = client.get("/account")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/signin?next=/account")


def test_sign_in_never_redirects_to_another_site(app):
    make_user(app, "ada@example.test")
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        response = sign_in(app.test_client(), next_url=target)
        assert response.headers["Location"] == "/dashboard", target


def test_an_idle_session_ends(make_app):
    app = make_app(SESSION_IDLE_MINUTES=30)
    client = app.test_client()
    make_user(app, "ada@example.test")
    sign_in(client)
    clock.advance(dt.timedelta(minutes=20))
    assert client.get("/account").status_code == 200  # use refreshes the idle timer
    clock.advance(dt.timedelta(minutes=29))
    assert client.get("/account").status_code == 200
    clock.advance(dt.timedelta(minutes=31))
    assert client.get("/account").status_code == 302


def test_a_session_ends_at_its_absolute_limit_however_active(make_app):
    app = make_app(SESSION_IDLE_MINUTES=60, SESSION_MAX_HOURS=2)
    client = app.test_client()
    make_user(app, "ada@example.test")
    sign_in(client)
    for _ in range(5):
        clock.advance(dt.timedelta(minutes=25))
        client.get("/account")
    assert client.get("/account").status_code == 302


def test_sign_out_ends_the_session(app, client):
    make_user(app, "ada@example.test")
    sign_in(client)
    page = client.get("/dashboard").get_data(as_text=True)
    response = client.post("/signout", data={"csrf_token": csrf_from(page)})
    assert response.status_code == 302
    assert client.get("/dashboard").status_code == 302


def test_signup_page_creates_the_account_and_signs_in(client):
    page = client.get("/signup").get_data(as_text=True)
    response = client.post("/signup", data={
        "email": "new@example.test", "password": PASSWORD, "display_name": "<b>New</b>",
        "csrf_token": csrf_from(page)})
    assert response.status_code == 302
    overview = client.get("/dashboard").get_data(as_text=True)
    assert "&lt;b&gt;New&lt;/b&gt;" in overview and "<b>New</b>" not in overview
    assert "Confirm your email address" in overview


def test_first_run_setup_needs_the_token_from_the_log(app, client, caplog):
    token = app.extensions["setup_token"]
    page = client.get("/setup").get_data(as_text=True)
    form = {"email": "root@example.test", "password": PASSWORD, "csrf_token": csrf_from(page)}
    wrong = client.post("/setup", data={**form, "token": "guess"})
    assert wrong.status_code == 403
    right = client.post("/setup", data={**form, "token": token})
    assert right.status_code == 302
    assert "Admin" in client.get("/dashboard").get_data(as_text=True)
    assert client.get("/setup").status_code == 404  # once only


def test_the_setup_token_is_logged_at_start(make_app, caplog):
    with caplog.at_level("WARNING", logger="appliance"):
        app = make_app()
    assert app.extensions["setup_token"] in caplog.text


def test_no_setup_token_once_a_user_exists(app, make_app):
    make_user(app, "ada@example.test")
    assert "setup_token" not in make_app().extensions


def test_admin_pages_are_for_admins_only(app, client):
    make_user(app, "ada@example.test")
    sign_in(client)
    response = client.get("/admin/users", headers={"Accept": "text/html"})
    assert response.status_code == 403


def test_an_admin_suspends_a_user_from_the_dashboard(app, client):
    make_user(app, "root@example.test", role="admin")
    target = make_user(app, "bob@example.test", display_name="Bob <script>")
    sign_in(client, "root@example.test")
    listing = client.get("/admin/users?q=bob").get_data(as_text=True)
    assert "bob@example.test" in listing and "root@example.test" not in listing
    page = client.get(f"/admin/users/{target.id}").get_data(as_text=True)
    assert "Bob &lt;script&gt;" in page
    response = client.post(f"/admin/users/{target.id}/suspend",
                           data={"reason": "unpaid", "csrf_token": csrf_from(page)})
    assert response.status_code == 302
    bob = app.test_client()
    refused = sign_in(bob, "bob@example.test")
    assert refused.status_code == 403
    assert "suspended" in refused.get_data(as_text=True)
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert "admin.user_suspended" in audit


def test_the_mail_outbox_shows_held_mail_to_the_admin(app, client):
    make_user(app, "root@example.test", role="admin")
    app.test_client().post("/api/v1/auth/password/forgot", json={"email": "root@example.test"})
    sign_in(client, "root@example.test")
    page = client.get("/admin/mail").get_data(as_text=True)
    assert "Reset your password" in page and "/reset-password?token=" in page
