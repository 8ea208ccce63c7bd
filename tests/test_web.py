from markupsafe import escape

from tests.conftest import ROOT


def test_the_landing_page_says_what_this_is(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "self-hosted control panel" in page
    assert "/static/css/app.css" in page
    assert "/static/vendor/htmx/htmx.min.js" in page
    assert 'name="viewport"' in page


def test_the_site_name_is_escaped(make_app):
    client = make_app(SITE_NAME="<b>Evil</b> & Co").test_client()
    page = client.get("/").get_data(as_text=True)
    assert "<b>Evil</b>" not in page
    assert "&lt;b&gt;Evil&lt;/b&gt; &amp; Co" in page


def test_static_files_and_vendored_htmx_are_served(client):
    css = client.get("/static/css/app.css")
    assert css.status_code == 200 and b"--accent" in css.data
    htmx = client.get("/static/vendor/htmx/htmx.min.js")
    assert htmx.status_code == 200 and len(htmx.data) > 10_000
    assert (ROOT / "static/vendor/htmx/LICENSE").read_text().strip()


def test_the_api_reference_is_rendered_from_the_document(client):
    page = client.get("/docs/api").get_data(as_text=True)
    document = client.get("/api/v1/openapi.json").get_json()
    for path, item in document["paths"].items():
        assert path in page
        for op in item.values():
            assert str(escape(op["summary"])) in page
    assert "curl -s" in page


def test_vendored_htmx_matches_the_pinned_hash():
    import subprocess

    result = subprocess.run([str(ROOT / "scripts/vendor-assets"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
