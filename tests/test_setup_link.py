"""The first-run set-up link: logged at start and again until used, made afresh by
`appliance setup-link`, and the shell commands it names work as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from appliance import scheduler
from appliance.models import Setting
from appliance.services.accounts import setup_link
from tests.factories import csrf_from, make_user

PASSWORD = "a long admin passphrase"


def appliance(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **env})


def post_setup(client, token: str):
    page = client.get("/setup").get_data(as_text=True)
    return client.post("/setup", data={"token": token, "email": "root@example.test",
                                       "password": PASSWORD, "csrf_token": csrf_from(page)})


def test_setup_link_makes_a_fresh_link_and_the_old_one_stops_working(app, client, data_dir):
    first = app.extensions["setup_token"]
    result = appliance("setup-link", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:8080/setup\?token=[\w-]+", link), link
    fresh = link.split("token=")[1]
    assert fresh != first
    assert post_setup(client, first).status_code == 403
    assert post_setup(client, fresh).status_code == 302
    assert client.get("/setup").status_code == 404  # set up now
    with app.app_context():
        assert not setup_link.is_current(fresh)
        assert Setting.get_or_none(Setting.key == setup_link.ROW_KEY) is None  # gone with it


def test_setup_link_refuses_once_an_account_exists(app, data_dir):
    make_user(app, "ada@example.test")
    result = appliance("setup-link", "--data-dir", str(data_dir))
    assert result.returncode != 0
    assert "already set up" in result.stderr and "create-admin" in result.stderr


def test_setup_link_reads_the_service_settings_file(tmp_path):
    data = tmp_path / "service-data"
    env_file = tmp_path / "appliance.env"
    env_file.write_text(f"# as install-service writes it\nAPPLIANCE_HOST=0.0.0.0\n"
                        f"APPLIANCE_PORT=9123\nAPPLIANCE_DATA_DIR={data}\n")
    result = appliance("setup-link", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("http://127.0.0.1:9123/setup?token=")
    assert (data / "appliance.db").exists()


def test_the_reminder_logs_the_link_again_until_it_is_used(app, caplog):
    token = app.extensions["setup_token"]
    with caplog.at_level("WARNING", logger="appliance"):
        assert scheduler.run_task(app, "remind_setup_link") is True
    assert f"/setup?token={token}" in caplog.text
    caplog.clear()
    with app.app_context():
        setup_link.issue()  # what `appliance setup-link` does from a shell
    with caplog.at_level("WARNING", logger="appliance"):
        scheduler.run_task(app, "remind_setup_link")
    assert "was replaced" in caplog.text and token not in caplog.text
    make_user(app, "ada@example.test")
    caplog.clear()
    with caplog.at_level("WARNING", logger="appliance"):
        assert scheduler.run_task(app, "remind_setup_link") is False
    assert caplog.text == ""


def test_the_create_admin_command_in_the_log_works_as_written(make_app, caplog, data_dir):
    with caplog.at_level("WARNING", logger="appliance"):
        make_app()
    commands = re.findall(r"`([^`]+)`", caplog.text)
    create_admin = next(c for c in commands if " create-admin " in c)
    assert f"--data-dir {data_dir}" in create_admin
    result = subprocess.run(create_admin, shell=True, capture_output=True, text=True,  # noqa: S602 - the logged command, as an operator pastes it
                            timeout=60, env={**os.environ, "APPLIANCE_ADMIN_PASSWORD": PASSWORD},
                            cwd="/")
    assert result.returncode == 0, result.stderr
    assert "administrator you@example.com created" in result.stdout
    setup = next(c for c in commands if c.endswith(f"setup-link --data-dir {data_dir}"))
    again = subprocess.run(setup, shell=True, capture_output=True, text=True, timeout=60,  # noqa: S602
                           cwd="/")
    assert "already set up" in again.stderr  # the same data directory: the admin exists


def test_the_setup_page_names_commands_for_this_data_directory(client, data_dir):
    page = client.get("/setup").get_data(as_text=True)
    assert f"setup-link --data-dir {data_dir}" in page
    assert f"create-admin --email you@example.com --data-dir {data_dir}" in page
