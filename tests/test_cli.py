import subprocess
import sys

import requests

from appliance import __version__


def appliance(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "appliance", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_version():
    result = appliance("version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"appliance {__version__}"


def test_init_creates_the_data_directory_secrets_and_schema(tmp_path):
    data = tmp_path / "d"
    result = appliance("init", "--data-dir", str(data))
    assert result.returncode == 0, result.stderr
    assert (data / "appliance.db").exists()
    assert (data / "secrets" / "secret_key").exists()


def test_migrate_applies_then_reports_up_to_date(tmp_path):
    data = str(tmp_path / "d")
    first = appliance("migrate", "--data-dir", data)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_initial" in first.stdout
    second = appliance("migrate", "--data-dir", data)
    assert second.stdout.strip() == "database is up to date"
    status = appliance("migrate", "--status", "--data-dir", data)
    assert "applied  0001_initial" in status.stdout


def test_a_bad_setting_stops_with_a_clear_message(tmp_path):
    import os

    env = {**os.environ, "APPLIANCE_PORT": "http"}
    result = appliance("init", "--data-dir", str(tmp_path / "d"), env=env)
    assert result.returncode != 0
    assert "APPLIANCE_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_logs_one_line_with_its_url_and_serves(serve, tmp_path):
    server = serve(APPLIANCE_DATA_DIR=str(tmp_path / "served"))
    assert requests.get(server.url + "/api/v1/health").json() == {"ok": True}
    output = server.stop()
    listening = [line for line in output.splitlines() if "listening on" in line]
    assert len(listening) == 1
    assert f"http://127.0.0.1:{server.port}" in listening[0]
    assert (tmp_path / "served" / "appliance.db").exists()


def test_create_admin_from_the_shell(tmp_path):
    import os

    data = str(tmp_path / "d")
    env = {**os.environ, "APPLIANCE_ADMIN_PASSWORD": "a long admin passphrase"}
    result = appliance("create-admin", "--email", "Root@Example.test", "--data-dir", data,
                       env=env)
    assert result.returncode == 0, result.stderr
    assert "administrator root@example.test created" in result.stdout
    weak = appliance("create-admin", "--email", "two@example.test", "--data-dir", data,
                     env={**os.environ, "APPLIANCE_ADMIN_PASSWORD": "password1"})
    assert weak.returncode != 0 and "common" in weak.stderr
    from appliance import create_app

    app = create_app({"DATA_DIR": data})
    assert "setup_token" not in app.extensions
    response = app.test_client().post("/api/v1/auth/login", json={
        "email": "root@example.test", "password": "a long admin passphrase"})
    assert response.get_json()["user"]["role"] == "admin"
