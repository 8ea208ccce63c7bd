"""Every error path returns the one envelope with the right status and a request id."""

import logging

import pytest

from appliance.errors import Conflict, Unsupported


def assert_envelope(response, status, code):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"].startswith("req_")
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert isinstance(error["details"], dict)
    return error


@pytest.fixture
def app(make_app):
    """The real app plus three routes that fail on purpose, added before first use."""
    from appliance.api.schema import ApiBlueprint, Schema

    app = make_app(MAX_BODY_BYTES=1024)
    bp = ApiBlueprint("failing", __name__)

    class Echo(Schema):
        name: str
        count: int = 1

    @bp.operation("/echo", "POST", summary="Echo", body=Echo, response=Echo)
    def echo(body):
        return body

    @bp.operation("/boom", summary="Always fails")
    def boom():
        raise RuntimeError("secret internal detail /etc/passwd")

    @bp.operation("/busy", summary="Always conflicts")
    def busy():
        raise Conflict("The instance is busy.", code="operation_in_progress")

    @bp.operation("/unsupported", summary="Engine cannot")
    def unsupported():
        raise Unsupported("snapshots")

    app.register_blueprint(bp, url_prefix="/api/v1/test")
    return app


def test_every_response_has_a_request_id(client):
    first = client.get("/api/v1/health").headers["X-Request-Id"]
    second = client.get("/api/v1/health").headers["X-Request-Id"]
    assert first.startswith("req_") and second.startswith("req_") and first != second


def test_unknown_route_is_404_route_not_found(client):
    error = assert_envelope(client.get("/api/v1/nothing-here"), 404, "route_not_found")
    assert "/api/v1/nothing-here" in error["message"]


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/v1/health")
    error = assert_envelope(response, 405, "method_not_allowed")
    assert "GET" in error["details"]["allowed"]
    assert "GET" in response.headers["Allow"]


def test_malformed_json_is_400_malformed_json(client):
    response = client.post("/api/v1/test/echo", data="{not json",
                           content_type="application/json")
    assert_envelope(response, 400, "malformed_json")


def test_a_body_that_is_not_json_is_415(client):
    response = client.post("/api/v1/test/echo", data="name=x",
                           content_type="application/x-www-form-urlencoded")
    assert_envelope(response, 415, "unsupported_media_type")


def test_a_missing_field_is_400_naming_the_field(client):
    error = assert_envelope(client.post("/api/v1/test/echo", json={"count": 2}),
                            400, "invalid_request")
    assert error["details"]["field"] == "name"
    assert error["details"]["location"] == "body"


def test_a_wrong_type_is_400_naming_the_field(client):
    error = assert_envelope(client.post("/api/v1/test/echo", json={"name": "a", "count": "x"}),
                            400, "invalid_request")
    assert error["details"]["field"] == "count"


def test_an_unknown_field_is_refused(client):
    error = assert_envelope(client.post("/api/v1/test/echo", json={"name": "a", "colour": 1}),
                            400, "invalid_request")
    assert error["details"]["field"] == "colour"


def test_a_valid_body_round_trips(client):
    response = client.post("/api/v1/test/echo", json={"name": "a"})
    assert response.status_code == 200
    assert response.get_json() == {"name": "a", "count": 1}


def test_an_oversized_body_is_413(client):
    response = client.post("/api/v1/test/echo", json={"name": "x" * 5000})
    error = assert_envelope(response, 413, "payload_too_large")
    assert error["details"]["limit_bytes"] == 1024


def test_an_oversized_body_is_413_on_any_route(client):
    assert_envelope(client.post("/api/v1/nothing", data=b"x" * 5000), 413, "payload_too_large")


def test_an_unexpected_exception_is_500_logged_with_the_request_id_and_never_shown(client, caplog):
    with caplog.at_level(logging.ERROR, logger="appliance.http"):
        response = client.get("/api/v1/test/boom")
    error = assert_envelope(response, 500, "internal_error")
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    logged = [r for r in caplog.records if error["request_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_domain_errors_keep_their_status_and_code(client):
    assert_envelope(client.get("/api/v1/test/busy"), 409, "operation_in_progress")
    error = assert_envelope(client.get("/api/v1/test/unsupported"), 409, "unsupported")
    assert error["details"]["capability"] == "snapshots"


def test_a_browser_gets_the_error_as_an_escaped_html_page(client):
    response = client.get("/no/<script>alert(1)</script>", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert response.headers["X-Request-Id"] in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page


def test_a_script_gets_json_even_outside_the_api(client):
    assert_envelope(client.get("/no/such/page", headers={"Accept": "application/json"}),
                    404, "route_not_found")
