"""How a shell calls this installation of the appliance, for the commands it prints.

Log lines, the set-up page and CLI messages tell the operator what to type next; they
must work as written. So they name the program the way this process was started (the
single binary, a virtualenv's `appliance`, or `python -m appliance`), shortened to
`appliance` only when that name on PATH is the same program, and they pass the data
directory in use. Under systemd as a non-root user they are prefixed with `sudo -u
<user>`, so the database and secrets stay the service user's files.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sys
from pathlib import Path

# Written by `appliance install-service` (appliance/service_install.py), read by the unit.
SERVICE_ENV_FILE = Path("/etc/appliance/appliance.env")


def frozen() -> bool:
    """Whether this is the single binary (PyInstaller sets sys.frozen)."""
    return bool(getattr(sys, "frozen", False))


def program_path() -> Path | None:
    """The file that runs this appliance: the binary, or the virtualenv's `appliance`
    script; None when only `python -m appliance` does."""
    if frozen():
        return Path(sys.executable).resolve()
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started is not None and started.name == "appliance" and started.is_file():
        return started.resolve()
    beside = Path(sys.executable).parent / "appliance"  # the console script of this venv
    return beside.absolute() if beside.is_file() else None


def program() -> list[str]:
    """argv that starts this appliance from any shell: ["appliance"] when PATH finds this
    very program, else its absolute path, else [python, "-m", "appliance"]."""
    path = program_path()
    if path is None:
        return [sys.executable, "-m", "appliance"]
    on_path = shutil.which("appliance")
    if on_path and Path(on_path).resolve() == path.resolve():
        return ["appliance"]
    return [str(path)]


def as_service_user() -> list[str]:
    """["sudo", "-u", user] when this process is a systemd service of a non-root user."""
    if "INVOCATION_ID" not in os.environ or os.geteuid() == 0:
        return []
    try:
        return ["sudo", "-u", pwd.getpwuid(os.geteuid()).pw_name]
    except KeyError:
        return []


def command(*args: str, data_dir: str | None = None) -> str:
    """A shell command line for `appliance ARGS` against this process's data directory."""
    argv = [*as_service_user(), *program(), *args]
    if data_dir is not None:
        if as_service_user() and SERVICE_ENV_FILE.is_file():
            argv += ["--env-file", str(SERVICE_ENV_FILE)]
        else:
            argv += ["--data-dir", data_dir]
    return shlex.join(argv)
