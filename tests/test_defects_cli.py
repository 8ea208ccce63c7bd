"""The commands that do not serve say nothing about a set-up page they cannot offer."""

from __future__ import annotations

import os
import subprocess
import sys


def appliance(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_create_admin_does_not_offer_a_set_up_link_while_it_creates_the_administrator(
        tmp_path):
    env = {**os.environ, "APPLIANCE_ADMIN_PASSWORD": "a long admin passphrase",
           "APPLIANCE_PORT": "9123"}
    result = appliance("create-admin", "--email", "root@example.test", "--data-dir",
                       str(tmp_path / "d"), env=env)
    assert result.returncode == 0, result.stderr
    assert "no administrator yet" not in result.stderr
    assert "/setup" not in result.stderr and "8080" not in result.stderr


def test_init_does_not_print_a_set_up_token_that_dies_with_it(tmp_path):
    result = appliance("init", "--data-dir", str(tmp_path / "d"), env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert "setup?token=" not in result.stderr
