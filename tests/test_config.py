import os
import re
import stat

import pytest

from appliance import create_app
from appliance.config import SETTINGS, ConfigError, load_settings
from tests.conftest import ROOT


def readme_settings() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    return dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]*) \|", section, re.M))


def test_every_setting_is_documented_in_the_readme():
    documented = readme_settings()
    declared = {setting.name for setting in SETTINGS}
    assert declared - documented.keys() == set(), "settings missing from the README table"
    assert documented.keys() - declared == set(), "README documents settings that do not exist"


def test_every_setting_has_help_and_a_parsable_default():
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
        if setting.default != "":
            assert setting.parse(str(setting.default)) == setting.default, setting.name


def test_environment_overrides_defaults():
    settings = load_settings(environ={"APPLIANCE_PORT": "9001", "APPLIANCE_SIGNUP": "Closed"})
    assert settings["PORT"] == 9001
    assert settings["SIGNUP"] == "closed"
    assert settings["HOST"] == "127.0.0.1"


@pytest.mark.parametrize("name, value", [
    ("PORT", "eighty"), ("PORT", "70000"), ("THREADS", "0"), ("SIGNUP", "maybe"),
    ("SQLITE_SYNCHRONOUS", "off"), ("MAX_BODY_BYTES", "-1"),
])
def test_a_malformed_value_stops_with_the_settings_name(name, value):
    with pytest.raises(ConfigError, match=f"APPLIANCE_{name}"):
        load_settings(environ={f"APPLIANCE_{name}": value})


def test_secrets_can_come_from_a_file(tmp_path):
    secret = tmp_path / "metrics_token"
    secret.write_text("s3cret\n")
    settings = load_settings(environ={"APPLIANCE_METRICS_TOKEN_FILE": str(secret)})
    assert settings["METRICS_TOKEN"] == "s3cret"


def test_an_unreadable_secret_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="APPLIANCE_SECRET_KEY_FILE"):
        load_settings(environ={"APPLIANCE_SECRET_KEY_FILE": str(tmp_path / "missing")})


def test_a_config_file_sets_values_below_the_environment(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('site_name = "Club VPS"\nport = 9100\nsignup = "invite"\n')
    settings = load_settings(environ={"APPLIANCE_CONFIG": str(path), "APPLIANCE_PORT": "9200"})
    assert settings["SITE_NAME"] == "Club VPS"
    assert settings["SIGNUP"] == "invite"
    assert settings["PORT"] == 9200


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('sitename = "typo"\n')
    with pytest.raises(ConfigError, match="sitename"):
        load_settings(environ={"APPLIANCE_CONFIG": str(path)})


def test_overrides_win_and_are_parsed():
    settings = load_settings({"port": "9300", "signup": "closed"}, environ={"APPLIANCE_PORT": "1"})
    assert settings["PORT"] == 9300
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({"nonsense": 1}, environ={})


def test_first_start_generates_the_secret_key_with_mode_0600(data_dir):
    app = create_app({"DATA_DIR": str(data_dir)})
    path = data_dir / "secrets" / "secret_key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(data_dir).st_mode) == 0o700
    assert len(app.config["APPLIANCE"]["SECRET_KEY"]) == 64
    again = create_app({"DATA_DIR": str(data_dir)})
    assert again.config["APPLIANCE"]["SECRET_KEY"] == app.config["APPLIANCE"]["SECRET_KEY"]


def test_a_given_secret_key_is_used_and_nothing_is_generated(data_dir):
    app = create_app({"DATA_DIR": str(data_dir), "SECRET_KEY": "given-by-operator"})
    assert app.config["APPLIANCE"]["SECRET_KEY"] == "given-by-operator"
    assert not (data_dir / "secrets" / "secret_key").exists()
