"""The wheel installed into a fresh virtualenv serves pages and static files from anywhere."""

import shutil
import subprocess
import sys
import venv

import pytest
import requests

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_wheel_serves_pages_static_files_and_the_api_from_any_directory(tmp_path, serve):
    # Build from a copy: setuptools leaves build/ behind, and stale files there could
    # slip into a later wheel.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "data", "*.egg-info", "__pycache__", ".*_cache"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist),
                    str(source)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("appliance-*.whl"))

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    str(wheel)], check=True, capture_output=True, timeout=600)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = serve([str(env_dir / "bin" / "appliance")], cwd=elsewhere)

    landing = requests.get(server.url + "/", headers={"Accept": "text/html"})
    assert landing.status_code == 200 and "self-hosted control panel" in landing.text
    assert requests.get(server.url + "/static/css/app.css").status_code == 200
    assert requests.get(server.url + "/static/vendor/htmx/htmx.min.js").status_code == 200
    assert requests.get(server.url + "/api/v1/health").json() == {"ok": True}
    assert requests.get(server.url + "/docs/api").status_code == 200
    assert (elsewhere / "data" / "appliance.db").exists()  # ./data of the working directory


def test_every_python_package_is_listed_in_setup_cfg():
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    found = {".".join(init.parent.relative_to(ROOT).parts)
             for init in (ROOT / "appliance").rglob("__init__.py")}
    assert found <= listed, f"missing from setup.cfg: {sorted(found - listed)}"
