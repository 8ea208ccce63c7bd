import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_code_is_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "appliance", "tests", "scripts"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services_and_drivers_type_check():
    # This interpreter's mypy, so it sees the stubs installed beside the code; what it
    # checks, and how strictly, is [tool.mypy] in pyproject.toml.
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "pyproject.toml"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
