"""Defects of the dashboard found in use (the defects issue), each pinned by a test.

Security headers and a strict Content-Security-Policy; post/redirect/get for the forms
that show a secret once; unique project names per owner; the API reference's code spans
and the admin outbox's links. The same pages in a real browser: test_browser_defects.py.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse

import pytest

from appliance.models import ApiKey, Webhook
from appliance.services import clock
from appliance.web import pages
from tests.factories import EVIL, EVIL_ESCAPED, api, create_project, make_user, signed_in
from tests.receivers import Receiver, allow_loopback

HTMX = {"HX-Request": "true"}


@pytest.fixture
def receiver(monkeypatch):
    allow_loopback(monkeypatch)
    found = Receiver()
    yield found
    found.close()


def _follow(browser, response):
    """GET the page a post redirected to (what the browser shows, and what F5 repeats)."""
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    location = response.headers["Location"]
    return location, browser.get(location)


def _secret(html: str, prefix: str) -> str | None:
    match = re.search(rf'id="new-secret"[^>]*value="({prefix}[^"]+)"', html, re.S)
    return match.group(1) if match else None


# 1. Headers and the Content-Security-Policy -------------------------------------------


def _csp(response) -> dict[str, str]:
    policy = response.headers.get("Content-Security-Policy", "")
    return {part.split()[0]: part for part in (p.strip() for p in policy.split(";")) if part}


def test_dashboard_pages_refuse_framing_sniffing_and_leaking_the_referrer(client, ada):
    for response in (client.get("/"), client.get("/signin"), ada.get("/projects"),
                     ada.get("/no-such-page")):
        headers = response.headers
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
        csp = _csp(response)
        assert csp["frame-ancestors"] == "frame-ancestors 'none'"
        assert csp["script-src"] == "script-src 'self'"
        assert csp["style-src"] == "style-src 'self'"
        assert csp["object-src"] == "object-src 'none'"
        assert "unsafe" not in headers["Content-Security-Policy"]
    health = client.get("/api/v1/health")
    assert health.headers["X-Content-Type-Options"] == "nosniff"


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_HANDLER = re.compile(r"<[^>]+\s(on[a-z]+|hx-on[:\w-]*|style)\s*=", re.I)


def test_pages_carry_no_inline_script_handler_or_style(app, ada, root):
    project_id = create_project_by_form(ada, "Lab")
    ada.post("/keys", {"name": "ci", "scopes": ["usage:read"]})
    paths = ["/", "/signin", "/signup", "/docs/api", "/dashboard", "/projects",
             f"/projects/{project_id}", "/keys", "/webhooks", "/events", "/account",
             "/account/limits", "/account/ssh-keys", "/billing"]
    for path in paths:
        html = ada.get(path).get_data(as_text=True)
        assert not INLINE_SCRIPT.search(html), path
        assert not INLINE_HANDLER.search(html), (path, INLINE_HANDLER.search(html).group(0))
    for path in ("/admin/users", "/admin/mail", "/admin/limits"):
        html = root.get(path).get_data(as_text=True)
        assert not INLINE_SCRIPT.search(html), path
        assert not INLINE_HANDLER.search(html), path


# 2. Post/redirect/get: a reload never repeats the action ------------------------------


def test_creating_a_key_redirects_and_a_reload_neither_repeats_it_nor_shows_the_secret(
        app, ada):
    response = ada.post("/keys", {"name": "ci", "scopes": ["usage:read"]})
    location, shown = _follow(ada, response)
    assert "sk_" not in location  # the secret never travels in a URL
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    html = shown.get_data(as_text=True)
    secret = _secret(html, "sk_")
    assert secret and html.count(secret) == 1 and "Key ci created." in html
    again = ada.get(location)  # F5 on the result page
    assert _secret(again.get_data(as_text=True), "sk_") is None
    assert "already shown" in again.get_data(as_text=True)
    with app.app_context():
        assert ApiKey.select().count() == 1


def test_a_shown_secret_is_only_for_the_session_that_made_it_and_for_a_minute(app, ada, bob):
    response = ada.post("/keys", {"name": "ci", "scopes": ["usage:read"]})
    location = response.headers["Location"]
    assert _secret(bob.get(location).get_data(as_text=True), "sk_") is None
    clock.advance(dt.timedelta(seconds=61))
    assert _secret(ada.get(location).get_data(as_text=True), "sk_") is None


def test_rotating_a_key_redirects_to_its_new_secret_shown_once(app, ada):
    ada.post("/keys", {"name": "ci", "scopes": ["usage:read"]})
    with app.app_context():
        key_id = ApiKey.select().get().id
    location, shown = _follow(ada, ada.post(f"/keys/{key_id}/rotate", {"grace_seconds": "0"}))
    assert shown.headers["Cache-Control"] == "no-store"
    html = shown.get_data(as_text=True)
    assert _secret(html, "sk_") and "Key ci has a new secret." in html
    assert _secret(ada.get(location).get_data(as_text=True), "sk_") is None


def test_creating_a_webhook_redirects_and_shows_its_secret_once(app, ada, receiver):
    response = ada.post("/webhooks", {"url": receiver.url, "all_types": "1",
                                      "description": EVIL})
    location, shown = _follow(ada, response)
    assert shown.headers["Cache-Control"] == "no-store"
    html = shown.get_data(as_text=True)
    assert _secret(html, "whsec_") and "Webhook created." in html
    assert EVIL_ESCAPED in html and EVIL not in html
    assert _secret(ada.get(location).get_data(as_text=True), "whsec_") is None
    with app.app_context():
        assert Webhook.select().count() == 1


def test_rotating_a_webhook_secret_and_testing_it_redirect(app, ada, receiver):
    ada.post("/webhooks", {"url": receiver.url, "all_types": "1"})
    with app.app_context():
        webhook_id = Webhook.select().get().id
    one = f"/webhooks/{webhook_id}"
    location, shown = _follow(ada, ada.post(one + "/rotate", {"grace_seconds": "3600"}))
    assert location.startswith(one)
    assert shown.headers["Cache-Control"] == "no-store"
    assert _secret(shown.get_data(as_text=True), "whsec_")
    assert _secret(ada.get(location).get_data(as_text=True), "whsec_") is None

    location, shown = _follow(ada, ada.post(one + "/test"))
    assert "Test delivered: HTTP 200" in shown.get_data(as_text=True)
    assert "Test delivered" not in ada.get(location).get_data(as_text=True)
    assert len(receiver.received) == 1  # the reload sent nothing


# 4. Project names, notices, code spans, mail links -----------------------------------


def create_project_by_form(browser, name: str) -> str:
    response = browser.post("/projects", {"name": name})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return urllib.parse.urlsplit(response.headers["Location"]).path.rsplit("/", 1)[1]


def test_project_names_are_unique_per_owner(app, client, owner):
    first = create_project(client, owner, "Lab")
    other = create_project(client, owner, "Rack")
    again = api(client, "POST", "/projects", owner, json={"name": "  lab "})
    assert again.status_code == 409
    error = again.get_json()["error"]
    assert error["code"] == "project_name_taken" and error["details"]["field"] == "name"
    renamed = api(client, "PATCH", f"/projects/{other}", owner, json={"name": "LAB"})
    assert renamed.status_code == 409
    assert api(client, "PATCH", f"/projects/{first}", owner,
               json={"name": "Lab"}).status_code == 200  # its own name is no conflict
    make_user(app, "someone@example.test")
    someone = signed_in(client, "someone@example.test")
    assert api(client, "POST", "/projects", someone, json={"name": "Lab"}).status_code == 201
    assert api(client, "DELETE", f"/projects/{first}", owner).status_code == 204
    assert api(client, "POST", "/projects", owner, json={"name": "Lab"}).status_code == 201


def test_a_duplicate_project_name_is_refused_next_to_the_field(ada):
    create_project_by_form(ada, "Lab")
    response = ada.post("/projects", {"name": "Lab"})
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert re.search(r'id="e-f-create-name">[^<]*already have a project', html)


def test_forms_and_links_of_a_page_with_a_notice_do_not_carry_it_on(ada):
    project_id = create_project_by_form(ada, "Lab")
    html = ada.get(f"/projects/{project_id}?notice=Project+created.").get_data(as_text=True)
    assert html.count("Project created.") == 1
    assert 'data-notice' in html  # the script that drops it from the address finds it
    for attribute in re.findall(r'(?:href|action|hx-\w+)="([^"]*)"', html):
        assert "notice" not in attribute, attribute


def test_the_api_reference_renders_code_spans_not_backticks(client):
    html = client.get("/docs/api").get_data(as_text=True)
    assert "`" not in html
    assert "<code>" in html


def test_code_spans_escape_first():
    rendered = str(pages.code_spans("Use `<b>x</b>` and <i>`y`</i>"))
    assert rendered == ("Use <code>&lt;b&gt;x&lt;/b&gt;</code> and "
                        "&lt;i&gt;<code>y</code>&lt;/i&gt;")


def test_links_in_the_mail_outbox_are_clickable_and_safe(app, client, root):
    client.post("/api/v1/auth/signup", json={"email": "new@example.test",
                                             "password": "correct horse battery staple",
                                             "display_name": EVIL})
    html = root.get("/admin/mail").get_data(as_text=True)
    assert re.search(r'<a href="http://[^"]+/verify-email\?token=[\w-]+" rel="noopener '
                     r'noreferrer">http://', html), html[-3000:]
    assert EVIL not in html


def test_linkify_only_links_http_urls_and_escapes_the_rest():
    body = 'Go to https://x.test/a?b=1&c="2"><script> or javascript:alert(1) now.'
    rendered = str(pages.linkify(body))
    assert rendered.startswith('Go to <a href="https://x.test/a?b=1&amp;c=" rel="noopener '
                               'noreferrer">https://x.test/a?b=1&amp;c=</a>&#34;2&#34;&gt;'
                               '&lt;script&gt;')
    assert "javascript:alert(1)" in rendered and 'href="javascript' not in rendered
