import shutil
import subprocess
import sys

from appliance import __version__


def test_health_says_ok(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}


def test_database_health_reports_the_engine_and_migrations(client):
    body = client.get("/api/v1/health/db").get_json()
    assert body["ok"] is True
    assert body["engine"] == "sqlite"
    assert body["migrations_applied"] >= 1


def test_database_health_is_503_when_the_database_is_gone(app, data_dir):
    client = app.test_client()
    assert client.get("/api/v1/health/db").status_code == 200
    shutil.rmtree(data_dir)  # the next connection cannot open the file
    response = client.get("/api/v1/health/db")
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "database_unavailable"
    assert error["request_id"] == response.headers["X-Request-Id"]
    assert client.get("/api/v1/health").status_code == 200  # the process itself is up


def test_meta_states_version_and_policies(client):
    body = client.get("/api/v1/meta").get_json()
    assert body["version"] == __version__
    assert body["api_version"] == "v1"
    assert body["pagination"]["default_limit"] == 50
    assert body["pagination"]["max_limit"] == 100
    assert body["idempotency"]["header"] == "Idempotency-Key"
    assert body["idempotency"]["retention_hours"] == 24


def test_public_config_follows_the_settings(make_app):
    client = make_app(SITE_NAME="Club VPS", SIGNUP="closed").test_client()
    assert client.get("/api/v1/config").get_json() == {
        "site_name": "Club VPS", "support_email": "", "signup": "closed",
        "signup_open": False, "accent_color": "", "footer_text": "", "support_url": "",
        "logo_url": None, "favicon_url": None, "theme_url": None}


def test_public_config_prefers_a_value_changed_at_run_time(app):
    from appliance.services import settings

    with app.app_context():
        settings.put("SITE_NAME", "Renamed")
    assert app.test_client().get("/api/v1/config").get_json()["site_name"] == "Renamed"


def test_metrics_count_requests_by_route_and_status(client):
    client.get("/api/v1/health")
    client.get("/api/v1/health")
    client.get("/api/v1/missing")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert ('appliance_http_requests_total{method="GET",route="/api/v1/health",status="200"} 2.0'
            in text)
    assert 'route="<unmatched>",status="404"' in text
    assert ('appliance_http_request_duration_seconds_bucket'
            '{le="0.005",method="GET",route="/api/v1/health"}') in text


def test_metrics_can_require_a_token(make_app):
    client = make_app(METRICS_TOKEN="t0ken").test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer t0ken"}).status_code == 200


def test_no_view_or_hook_is_async(app):
    """ApplianceFlask calls views and hooks directly; an async one would never run."""
    import inspect

    functions = list(app.view_functions.values())
    functions += [f for funcs in app.before_request_funcs.values() for f in funcs]
    functions += [f for funcs in app.after_request_funcs.values() for f in funcs]
    functions += app.teardown_appcontext_funcs
    functions += app.extensions["appliance_hooks"].before + app.extensions["appliance_hooks"].after
    assert functions and not [f for f in functions if inspect.iscoroutinefunction(f)]


def test_heavy_libraries_wait_for_their_first_use(tmp_path):
    """fpdf2 (invoice PDFs), requests (Stripe) and zxcvbn (its dictionaries) are not
    loaded at start-up, no argon2 hash is computed, and no API model has built its
    validator yet (they build on first use): all that costs start-up time and idle memory
    (bench targets) for features most requests never use."""
    script = ("import sys, appliance; app = appliance.create_app({'DATA_DIR': sys.argv[1]}); "
              "from appliance.api import schema; "
              "from appliance.services.accounts import passwords; "
              "built = [m.__name__ for m in schema.Schema.__subclasses__() "
              "if m.__pydantic_complete__]; "
              "print(sorted(m for m in ('fpdf', 'fontTools', 'stripe', 'zxcvbn') "
              "if m in sys.modules), passwords._dummy_hash.cache_info().currsize, "
              "len(built) < 5)")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[] 0 True"
