"""Branding: the texts and colour over the API and the dashboard, a logo uploaded and then
shown on the sign-in page, in a mail a real SMTP server receives and on an invoice PDF;
SVG refused; every new admin route refuses non-administrators."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image
from pypdf import PdfReader

from appliance.models import AuditLog
from appliance.services.accounts import mail
from tests.factories import api, bearer, login
from tests.smtp import SmtpServers
from tests.test_invoices import issued, pdftotext, people  # noqa: F401 - fixtures

SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" '
       b'height="10"><script>alert(document.cookie)</script><rect width="10" '
       b'height="10"/></svg>')


def png(width: int = 120, height: int = 40, colour=(11, 114, 133)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def upload(client, headers, data: bytes, kind: str = "logo"):
    return api(client, "PUT", f"/admin/settings/branding/{kind}", headers,
               json={"content_base64": base64.b64encode(data).decode()})


@pytest.fixture
def smtp_servers():
    servers = SmtpServers()
    yield servers
    servers.stop_all()


def test_a_logo_uploaded_is_served_with_a_cache_busting_url_and_shown_on_the_sign_in_page(
        client, admin, app):
    assert client.get("/api/v1/config").get_json()["logo_url"] is None
    first = upload(client, admin, png())
    assert first.status_code == 200, first.get_json()
    url = first.get_json()["logo_url"]
    assert re.fullmatch(r"/branding/logo\?v=[0-9a-f]{12}", url)
    assert client.get("/api/v1/config").get_json()["logo_url"] == url

    served = client.get(url)
    assert served.status_code == 200 and served.mimetype == "image/png"
    assert served.data == png()
    assert "immutable" in served.headers["Cache-Control"]
    assert client.get("/branding/logo?v=old").headers["Cache-Control"] == "no-cache"

    signin = client.get("/signin").get_data(as_text=True)
    assert f'<img class="brand-logo" src="{url.replace("?", "?")}"' in signin.replace(
        "&amp;", "&")

    second = upload(client, admin, png(colour=(200, 0, 0)))
    assert second.get_json()["logo_url"] != url  # a new image is a new URL
    with app.app_context():
        assert AuditLog.select().where(AuditLog.action == "branding.image_set").count() == 2

    removed = api(client, "DELETE", "/admin/settings/branding/logo", admin)
    assert removed.status_code == 200 and removed.get_json()["logo_url"] is None
    assert client.get(url).status_code == 404


def test_an_svg_with_a_script_is_refused_and_so_is_anything_not_a_png_or_jpeg(client, admin,
                                                                                root):
    refused = upload(client, admin, SVG)
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "svg_refused"
    assert refused.get_json()["error"]["details"]["field"] == "logo"
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, "GIF")
    assert upload(client, admin, gif.getvalue()).status_code == 400
    assert upload(client, admin, b"not an image at all").status_code == 400
    too_big = upload(client, admin, b"\x89PNG\r\n\x1a\n" + b"0" * (512 * 1024 - 7))
    assert too_big.status_code == 400 and "KB" in too_big.get_json()["error"]["message"]
    assert client.get("/api/v1/config").get_json()["logo_url"] is None

    # The dashboard's upload form says why, next to the field.
    page = root.client.post("/admin/settings/branding/logo",
                            data={"csrf_token": root.token,
                                  "logo": (io.BytesIO(SVG), "evil.svg", "image/svg+xml")},
                            content_type="multipart/form-data")
    assert page.status_code == 400
    assert "SVG images are refused" in page.get_data(as_text=True)
    assert client.get("/api/v1/config").get_json()["logo_url"] is None


def test_the_dashboard_saves_the_texts_and_the_accent_colour_as_a_stylesheet(client, root):
    saved = root.post("/admin/settings/branding", {
        "site_name": "Club VPS", "branding_accent_color": "#0B7285",
        "branding_footer_text": "Run by the club, for the club",
        "branding_support_url": "https://help.example.test/"})
    assert saved.status_code == 302, saved.get_data(as_text=True)[:500]
    config = client.get("/api/v1/config").get_json()
    assert (config["site_name"], config["accent_color"], config["footer_text"],
            config["support_url"]) == ("Club VPS", "#0b7285", "Run by the club, for the club",
                                       "https://help.example.test")
    page = client.get("/signin").get_data(as_text=True)
    assert '<link rel="stylesheet" href="/branding/theme.css?v=0b7285">' in page
    assert "Run by the club, for the club" in page and "https://help.example.test" in page
    assert "style=" not in page  # the colour is a stylesheet, not an inline style
    css = client.get("/branding/theme.css?v=0b7285")
    assert css.mimetype == "text/css" and "--accent: #0b7285" in css.get_data(as_text=True)

    bad = root.post("/admin/settings/branding", {"site_name": "Club VPS",
                                                 "branding_accent_color": "teal"})
    assert bad.status_code == 400 and "#rrggbb" in bad.get_data(as_text=True)


def test_a_mail_carries_the_logo_and_the_footer(make_app, smtp_servers):
    inbox, port = smtp_servers.start()
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=port, SMTP_SECURITY="none",
                   SMTP_FROM="panel@example.test")
    client = app.test_client()
    from tests.factories import make_user

    make_user(app, "root@example.test", role="admin")
    admin = bearer(login(client, "root@example.test"))
    assert upload(client, admin, png()).status_code == 200
    api(client, "PUT", "/admin/settings/branding", admin,
        json={"site_name": "Club VPS", "footer_text": "Run by the club"})
    with app.app_context():
        row = mail.send("ada@example.test", "Hello", "The body of the mail.")
    assert row.status == "sent", row.error
    [message] = inbox.messages()
    text = message.get_body(("plain",)).get_content()
    assert "The body of the mail." in text and "Club VPS" in text and "Run by the club" in text
    html = message.get_body(("html",))
    assert html is not None and 'src="cid:logo"' in html.get_content()
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 1 and images[0]["Content-ID"] == "<logo>"
    assert images[0].get_content() == png()


def test_an_invoice_pdf_shows_the_logo_and_the_site_name(client, app, issued):  # noqa: F811
    with app.app_context():
        from tests.factories import make_user

        make_user(app, "root@example.test", role="admin")
    admin = bearer(login(client, "root@example.test"))
    assert upload(client, admin, png(300, 100)).status_code == 200
    api(client, "PUT", "/admin/settings/branding", admin,
        json={"footer_text": "Run by the club", "support_url": "https://help.example.test"})
    invoice = issued["ada"]
    response = api(client, "GET", f"/billing/invoices/{invoice.id}.pdf",
                   bearer(login(client, "ada@example.test")))
    assert response.status_code == 200
    reader = PdfReader(io.BytesIO(response.data))
    assert sum(len(page.images) for page in reader.pages) == 1
    shown = " ".join(pdftotext(response.data).split())
    assert "Appliance" in shown and "Invoice 2025-000001" in shown
    assert "Run by the club" in shown and "https://help.example.test" in shown


NEW_ADMIN_ROUTES = (
    ("GET", "/admin/settings/branding", None),
    ("PUT", "/admin/settings/branding", {"footer_text": "x"}),
    ("PUT", "/admin/settings/branding/logo", {"content_base64": ""}),
    ("DELETE", "/admin/settings/branding/logo", None),
    ("POST", "/admin/users/usr_nobody/suspend", {"reason": "x", "until": "2099-01-01T00:00:00Z"}),
)


@pytest.mark.parametrize(("method", "path", "body"), NEW_ADMIN_ROUTES)
def test_non_administrators_get_403_on_the_new_admin_routes(client, owner, method, path, body):
    response = api(client, method, path, owner, json=body) if body is not None else api(
        client, method, path, owner)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "admin_only"


def test_non_administrators_get_403_on_the_branding_pages(ada):
    assert ada.get("/admin/settings/branding").status_code == 403
    assert ada.post("/admin/settings/branding", {"site_name": "Mine"}).status_code == 403
    assert ada.post("/admin/settings/branding/logo").status_code == 403
