"""`appliance install-service` / `uninstall-service`, the unit they write, and what
`serve` tells systemd.

The unit is checked by systemd's own parser: `systemd-analyze verify --root=R`, with the
unit and the installed program under R and this machine's standard units copied in (the
unit's dependencies, such as sysinit.target, are looked up under R too). Without
systemd-analyze the checks skip locally, and fail under CI=true (scripts/test-deps
installs Debian's `systemd` package, which works without systemd running).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import service_install
from appliance.service_install import Installer, InstallError, ServiceOptions, render_unit
from tests.conftest import ROOT, Server

HARDENING = ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
             "PrivateTmp=yes", "Restart=on-failure", "StandardOutput=journal")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
UNLIKELY_USER = "appliance-test-nobody"


def appliance(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        message = ("systemd-analyze is missing: run scripts/test-deps as root (Debian's "
                   "systemd package)")
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def installed(root: Path, *options: str) -> subprocess.CompletedProcess:
    result = appliance("install-service", "--root", str(root), *options)
    assert result.returncode == 0, result.stderr
    return result


def verify(root: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify of the unit under `root`, against this machine's units."""
    analyze = systemd_analyze()
    if not (root / "usr/lib/systemd/system").exists():
        shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    return subprocess.run([analyze, "verify", f"--root={root}", "appliance.service"],
                          capture_output=True, text=True, timeout=60)


def test_the_unit_it_writes_passes_systemd_analyze_verify(tmp_path):
    root = tmp_path / "root"
    installed(root, "--user", UNLIKELY_USER, "--group-for-engines", "docker",
              "--port", "9180", "--backup-dir", "/srv/backups")
    unit = (root / "etc/systemd/system/appliance.service").read_text()
    for line in (*HARDENING, f"User={UNLIKELY_USER}", "SupplementaryGroups=docker",
                 "ReadWritePaths=/var/lib/appliance -/srv/backups",
                 "EnvironmentFile=-/etc/appliance/appliance.env",
                 "ExecStart=/usr/local/bin/appliance serve"):
        assert line in unit.splitlines(), line
    result = verify(root)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    # The check above could not fail if verify accepted anything: plant two faults.
    root = tmp_path / "root"
    installed(root)
    unit = root / "etc/systemd/system/appliance.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    assert "Unknown key" in verify(root).stderr
    (root / "usr/local/bin/appliance").unlink()
    assert verify(root).returncode != 0


def test_the_hardened_unit_scores_ok_in_systemd_analyze_security(tmp_path):
    root = tmp_path / "root"
    installed(root)
    verify(root)  # copies the standard units
    result = subprocess.run([systemd_analyze(), "security", "--offline=yes", f"--root={root}",
                             "--threshold=30", "appliance.service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-600:]
    assert "Overall exposure level for appliance.service" in result.stdout


def test_scripts_appliance_service_is_the_template_with_the_default_options():
    shipped = (ROOT / "scripts/appliance.service").read_text()
    assert shipped == render_unit(ServiceOptions()), (
        "regenerate it: .venv/bin/appliance install-service --print-unit "
        "--group-for-engines '' > scripts/appliance.service")
    printed = appliance("install-service", "--print-unit", "--group-for-engines", "")
    assert printed.stdout == shipped
    for line in HARDENING:
        assert line in shipped.splitlines()


def test_with_root_it_writes_only_under_root_and_creates_no_user(tmp_path):
    root = tmp_path / "root"
    result = installed(root, "--user", UNLIKELY_USER, "--data-dir", "/var/lib/test-appliance",
                       "--host", "192.0.2.10", "--port", "9181")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert files == ["etc/appliance/appliance.env", "etc/appliance/installed-files",
                     "etc/systemd/system/appliance.service", "usr/local/bin/appliance"]
    with pytest.raises(KeyError):
        pwd.getpwnam(UNLIKELY_USER)
    assert "useradd --system" in result.stdout and "not created" in result.stdout
    data = root / "var/lib/test-appliance"
    assert data.is_dir() and (data.stat().st_mode & 0o777) == 0o700
    env = service_install.read_env_file(root / "etc/appliance/appliance.env")
    assert env == {"APPLIANCE_HOST": "192.0.2.10", "APPLIANCE_PORT": "9181",
                   "APPLIANCE_DATA_DIR": "/var/lib/test-appliance"}
    assert "systemctl enable --now appliance" in result.stdout
    assert "journalctl -u appliance" in result.stdout
    assert "systemctl restart" not in result.stdout  # a first install


def test_the_installed_wrapper_runs_this_installation(tmp_path):
    root = tmp_path / "root"
    installed(root)
    program = root / "usr/local/bin/appliance"
    assert os.access(program, os.X_OK)
    result = subprocess.run([str(program), "version"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("appliance "), result.stderr


def test_installing_again_keeps_the_operators_settings_and_the_last_options(tmp_path):
    root = tmp_path / "root"
    installed(root, "--port", "9182", "--user", UNLIKELY_USER, "--group-for-engines", "",
              "--backup-dir", "/srv/backups")
    env_file = root / "etc/appliance/appliance.env"
    env_file.write_text(env_file.read_text() + "APPLIANCE_SMTP_HOST=mail.example.test\n")
    unit = root / "etc/systemd/system/appliance.service"
    first_unit = unit.read_text()
    again = installed(root)  # e.g. with a new binary: no options given
    assert "systemctl restart appliance" in again.stdout
    assert unit.read_text() == first_unit
    assert service_install.read_env_file(env_file)["APPLIANCE_PORT"] == "9182"
    installed(root, "--port", "9183")
    env = service_install.read_env_file(env_file)
    assert env["APPLIANCE_PORT"] == "9183"
    assert env["APPLIANCE_SMTP_HOST"] == "mail.example.test"
    assert env_file.read_text().count("APPLIANCE_PORT=") == 1
    assert f"User={UNLIKELY_USER}" in unit.read_text().splitlines()


def test_uninstall_removes_the_unit_and_the_program_and_keeps_the_data(tmp_path):
    root = tmp_path / "root"
    installed(root)
    (root / "var/lib/appliance/appliance.db").write_text("data")
    result = appliance("uninstall-service", "--root", str(root))
    assert result.returncode == 0, result.stderr
    assert not (root / "etc/systemd/system/appliance.service").exists()
    assert not (root / "usr/local/bin/appliance").exists()
    assert not (root / "etc/appliance/installed-files").exists()
    assert (root / "var/lib/appliance/appliance.db").read_text() == "data"
    assert (root / "etc/appliance/appliance.env").exists()
    assert "kept: /var/lib/appliance, /etc/appliance/appliance.env" in result.stdout


def test_uninstall_leaves_a_program_it_did_not_install(tmp_path):
    root = tmp_path / "root"
    installed(root)
    (root / "etc/appliance/installed-files").unlink()  # as if installed by hand
    program = root / "usr/local/bin/appliance"
    program.write_text("#!/bin/sh\necho someone else's\n")
    assert appliance("uninstall-service", "--root", str(root)).returncode == 0
    assert program.exists()
    assert not (root / "etc/systemd/system/appliance.service").exists()  # ours: marked


def test_a_privileged_port_gets_only_the_bind_capability():
    unit = render_unit(ServiceOptions(port=443)).splitlines()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit
    assert "CapabilityBoundingSet=" in render_unit(ServiceOptions(port=8080)).splitlines()


def test_it_needs_root_unless_given_a_root_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError, match="needs root: sudo .* install-service"):
        Installer(None, print).install(ServiceOptions())
    with pytest.raises(InstallError, match="needs root"):
        Installer(None, print).uninstall()
    Installer(tmp_path, lambda line: None).install(ServiceOptions())  # --root: fine


def test_a_live_install_refuses_engine_groups_this_machine_lacks(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(service_install, "hidden_from_service", lambda: [])
    with pytest.raises(InstallError, match="no group no-such-engine-group"):
        Installer(None, print).install(ServiceOptions(engine_groups=("no-such-engine-group",)))


def test_a_live_install_refuses_an_installation_the_service_cannot_read(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(service_install, "hidden_from_service", lambda: ["/root/venv/bin/x"])
    with pytest.raises(InstallError, match="ProtectHome=yes.*single binary"):
        Installer(None, print).install(ServiceOptions())


@pytest.mark.parametrize(("options", "message"), [
    (("--user", "Bad User"), "--user"),
    (("--data-dir", "relative/dir"), "--data-dir"),
    (("--group-for-engines", "docker;rm"), "--group-for-engines"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, options, message):
    result = appliance("install-service", "--root", str(tmp_path / "root"), *options)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "root").exists()


@pytest.mark.slow
def test_serve_tells_systemd_when_it_is_ready_and_when_it_stops(tmp_path):
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(30)
        server = Server([sys.executable, "-m", "appliance"], tmp_path,
                        {"NOTIFY_SOCKET": address, "APPLIANCE_DATA_DIR": str(tmp_path / "d")})
        try:
            assert notify.recv(4096) == b"READY=1"
            assert server.wait().status_code == 200
        finally:
            output = server.stop()
        assert notify.recv(4096) == b"STOPPING=1"
    assert server.process.returncode == 0, output
