"""The single binary (scripts/build-binary) runs every command with no Python around.

The binary is built once per test session (scripts/build-binary only rebuilds when a
source is newer than dist/...), then run with a bare environment - PATH is an empty
directory, so no `python` can be found - from a fresh directory with no virtualenv.
Locally a machine that cannot build (the script's status 3: no Python with its shared
library, or PyPI out of reach) skips; under CI=true that fails instead.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from appliance import __version__
from tests.conftest import ROOT, free_port, wait_for_http

pytestmark = pytest.mark.slow

CANNOT_BUILD = 3
PASSWORD = "a long admin passphrase"


@pytest.fixture(scope="session")
def binary() -> Path:
    done = subprocess.run([str(ROOT / "scripts/build-binary"), "--no-report"],
                          capture_output=True, text=True, timeout=1500, cwd=ROOT,
                          stdin=subprocess.DEVNULL)
    if done.returncode == CANNOT_BUILD and os.environ.get("CI") != "true":
        pytest.skip("this machine cannot build the binary: "
                    + (done.stderr.strip().splitlines() or ["?"])[-1])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    path = ROOT / "dist" / f"appliance-{__version__}-linux-{platform.machine()}"
    assert path.is_file() and os.access(path, os.X_OK)
    return path


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> tuple[dict[str, str], Path]:
    """A bare environment (PATH: an empty directory) and a working directory for it."""
    home = tmp_path_factory.mktemp("bare")
    (home / "empty-bin").mkdir()
    env = {"PATH": str(home / "empty-bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    assert shutil.which("python3", path=env["PATH"]) is None
    assert shutil.which("python", path=env["PATH"]) is None
    work = home / "work"
    work.mkdir()
    return env, work


def run(binary: Path, bare: tuple[dict[str, str], Path], *args: str,
        **extra: str) -> subprocess.CompletedProcess:
    env, work = bare
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120,
                          env={**env, **extra}, cwd=work, stdin=subprocess.DEVNULL)


def mapped_files(pid: int) -> set[str]:
    files = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/"):
            files.add(fields[5])
    return files


def interpreter_pid(pid: int) -> int:
    """The onefile bootloader (`pid`) runs the interpreter as its child."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(children[0]) if children else pid


def test_version_and_help_answer_with_no_python(binary, bare):
    version = run(binary, bare, "version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"appliance {__version__}"
    helped = run(binary, bare, "--help")
    for command in ("serve", "init", "migrate", "create-admin", "setup-link", "backup",
                    "restore", "install-service", "uninstall-service", "version"):
        assert command in helped.stdout


def test_init_migrate_serve_create_admin_backup_from_the_binary_alone(binary, bare):
    env, work = bare
    init = run(binary, bare, "init")
    assert init.returncode == 0, init.stderr
    assert (work / "data" / "appliance.db").exists()  # ./data of the working directory
    status = run(binary, bare, "migrate", "--status")
    assert status.returncode == 0 and "pending" not in status.stdout
    assert "applied  0001_initial" in status.stdout

    port = free_port()
    server = subprocess.Popen([str(binary), "serve", "--port", str(port)], env=env, cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_http(url + "/api/v1/health", server, timeout=60).json() == {"ok": True}
        signin = requests.get(url + "/signin", timeout=10)
        assert signin.status_code == 200 and 'name="password"' in signin.text
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', signin.text).group(1)
        served = requests.get(url + stylesheet, timeout=10)
        assert served.status_code == 200
        assert served.content == (ROOT / stylesheet.removeprefix("/")).read_bytes()
        htmx = requests.get(url + "/static/vendor/htmx/htmx.min.js", timeout=10)
        assert htmx.status_code == 200 and len(htmx.content) > 10_000
        assert requests.get(url + "/docs/api", timeout=10).status_code == 200

        # Nothing of a Python installation on this machine is loaded: the interpreter
        # and its libraries come out of the binary.
        files = mapped_files(interpreter_pid(server.pid))
        assert any("libpython3" in name and "/_MEI" in name for name in files), files
        build_python = Path(os.path.realpath(sys.base_prefix))
        assert not [name for name in files
                    if name.startswith((str(build_python), str(ROOT)))
                    and not name.startswith(str(binary))]

        link = run(binary, bare, "setup-link")
        assert link.returncode == 0, link.stderr
        assert link.stdout.startswith("http://127.0.0.1:8080/setup?token=")
        token = link.stdout.strip().split("token=")[1]
        page = requests.get(f"{url}/setup?token={token}", timeout=10).text
        assert f"{binary} setup-link --data-dir {work / 'data'}" in page

        admin = run(binary, bare, "create-admin", "--email", "root@example.test",
                    APPLIANCE_ADMIN_PASSWORD=PASSWORD)
        assert admin.returncode == 0, admin.stderr
        assert "administrator root@example.test created" in admin.stdout
        signed_in = requests.post(url + "/api/v1/auth/login", timeout=30, json={
            "email": "root@example.test", "password": PASSWORD})
        assert signed_in.status_code == 200
        assert signed_in.json()["user"]["role"] == "admin"

        # A backup of the running appliance, made and checked by the binary alone.
        archive = work / "appliance-backup.tar.gz"
        backup = run(binary, bare, "backup", "--output", str(archive))
        assert backup.returncode == 0, backup.stderr
        verified = run(binary, bare, "backup", "--verify", str(archive))
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=30)
    assert server.returncode == 0, output
    assert "Traceback" not in output
    assert "/setup?token=" in output  # the first-run link, at start


def test_install_service_copies_the_running_binary(binary, bare, tmp_path):
    root = tmp_path / "root"
    result = run(binary, bare, "install-service", "--root", str(root),
                 "--group-for-engines", "")
    assert result.returncode == 0, result.stderr
    installed = root / "usr/local/bin/appliance"
    assert installed.read_bytes() == binary.read_bytes()
    assert os.access(installed, os.X_OK)
    assert f"copied from {binary}" in result.stdout
    assert (root / "etc/systemd/system/appliance.service").read_text() == (
        ROOT / "scripts/appliance.service").read_text()
    removed = run(binary, bare, "uninstall-service", "--root", str(root))
    assert removed.returncode == 0, removed.stderr
    assert not installed.exists()
