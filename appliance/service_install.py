"""`appliance install-service` and `uninstall-service`: the appliance as a hardened
systemd service.

Installing writes, under `root` (default `/`):

- /usr/local/bin/appliance: the running single binary, copied (`sys.frozen`), or else a
  two-line shell wrapper that runs this installation (its virtualenv's `appliance`);
- the system user (`useradd --system`) and the data directory (mode 0700, the user's);
  a backup directory outside it too, when one is given;
- /etc/appliance/appliance.env: HOST, PORT and DATA_DIR as APPLIANCE_* variables (other
  lines an operator added are kept when it is written again);
- /etc/systemd/system/appliance.service, rendered from UNIT_TEMPLATE, the one template
  scripts/appliance.service is also rendered from (a test checks they agree);
- /etc/appliance/installed-files: what it wrote, so `uninstall` removes exactly that.

With `root` set (`--root DIR`), nothing is written outside it: no user is created and
nothing is chown'ed or reloaded, and each skipped step is reported. `uninstall` removes
the unit and the program it installed; the data directory, the settings file and the
user stay (the message says how to remove them).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import invocation
from appliance.config import SETTINGS_BY_NAME

BIN = Path("/usr/local/bin/appliance")
UNIT = Path("/etc/systemd/system/appliance.service")
ENV_FILE = invocation.SERVICE_ENV_FILE
MANIFEST = Path("/etc/appliance/installed-files")
MARKER = "`appliance install-service`"
# The groups that own the engines' sockets (/var/lib/incus/unix.socket, /run/docker.sock).
ENGINE_GROUPS = ("incus-admin", "docker")
# ProtectHome=yes hides these from the service.
HIDDEN_FROM_SERVICE = ("/home", "/root", "/run/user")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PRIVILEGED_PORTS = 1024

UNIT_TEMPLATE = """\
# The appliance as a systemd service, as {marker} writes it with the
# options it was given (scripts/appliance.service: the defaults, for packagers). It runs
# /usr/local/bin/appliance as the user {user}; settings are APPLIANCE_* variables in
# /etc/appliance/appliance.env (README.md lists them). After editing either:
#   systemctl daemon-reload && systemctl restart appliance
[Unit]
Description=The appliance: a self-hosted control panel
After=network-online.target docker.service incus.service
Wants=network-online.target

[Service]
# READY=1 comes once migrations ran and the server listens (appliance/systemd.py); the
# single binary's interpreter is a child of its bootloader, hence NotifyAccess=all.
Type=notify
NotifyAccess=all
User={user}
Group={user}
{groups_line}
Environment=APPLIANCE_DATA_DIR={data_dir}
EnvironmentFile=-/etc/appliance/appliance.env
WorkingDirectory={data_dir}
ExecStart=/usr/local/bin/appliance serve
Restart=on-failure
RestartSec=5
# SIGTERM to the main process only: the single binary's bootloader hands it on to the
# interpreter, which finishes its jobs and writes its counters (then SIGKILL for all,
# after TimeoutStopSec).
KillMode=mixed
# Migrations run before READY=1; a large database may take a while.
TimeoutStartSec=300
# One line per event, with its priority (LOG_FORMAT=text or json). The first-run set-up
# link is there: journalctl -u appliance
StandardOutput=journal
StandardError=journal
SyslogIdentifier=appliance
{capabilities}
# Hardening: the service writes only its data (and backup) directory.
UMask=0077
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ReadWritePaths={writable}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service

[Install]
WantedBy=multi-user.target
"""


class InstallError(Exception):
    """The service cannot be installed (or removed) as asked; the message says why."""


@dataclass(frozen=True)
class ServiceOptions:
    user: str = "appliance"
    data_dir: str = "/var/lib/appliance"
    backup_dir: str = ""  # empty: DATA_DIR/backups, inside the data directory
    host: str = "127.0.0.1"
    port: int = 8080
    engine_groups: tuple[str, ...] = ()

    def check(self) -> None:
        if not USER_NAME.match(self.user):
            raise InstallError(f"--user {self.user!r}: expected a system user name such as "
                               "appliance")
        for option, path in (("--data-dir", self.data_dir), ("--backup-dir", self.backup_dir)):
            if path and not (path.startswith("/") and "\n" not in path and " " not in path):
                raise InstallError(f"{option} {path!r}: expected an absolute path without "
                                   "spaces")
        for group in self.engine_groups:
            if not USER_NAME.match(group):
                raise InstallError(f"--group-for-engines: {group!r} is not a group name")
        if not 1 <= self.port <= 65535:
            raise InstallError(f"--port {self.port}: expected 1 to 65535")

    def writable_paths(self) -> list[str]:
        """ReadWritePaths: the data directory, and a backup directory outside it (`-`:
        a NAS mount that is missing at start does not stop the service)."""
        paths = [self.data_dir]
        backup = self.backup_dir.rstrip("/")
        if backup and not (backup + "/").startswith(self.data_dir.rstrip("/") + "/"):
            paths.append("-" + backup)
        return paths


def options_for(given: dict[str, Any], previous: dict[str, Any]) -> ServiceOptions:
    """The options of an install: those `given` (None: not given), else those of the
    `previous` install (`Installer.previous`), else the defaults; the engine groups
    default to the ones this machine has."""
    values = previous | {name: value for name, value in given.items() if value is not None}
    if "engine_groups" not in values:
        values["engine_groups"] = existing_engine_groups()
    for name in ("data_dir", "backup_dir"):
        if name in values:
            values[name] = values[name].rstrip("/") or ("/" if values[name] else "")
    return ServiceOptions(**values)


def render_unit(options: ServiceOptions) -> str:
    groups = " ".join(options.engine_groups)
    capabilities = (
        "# Ports below 1024 need this one capability, and only it.\n"
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE"
        if options.port < PRIVILEGED_PORTS else "CapabilityBoundingSet=")
    return UNIT_TEMPLATE.format(
        marker=MARKER, user=options.user, data_dir=options.data_dir,
        writable=" ".join(options.writable_paths()), capabilities=capabilities,
        groups_line=(f"# The engines' sockets belong to these groups.\nSupplementaryGroups={groups}"
                     if groups else
                     "# No engine socket groups (install-service --group-for-engines "
                     "incus-admin,docker).\n#SupplementaryGroups=incus-admin docker"))


def env_values(options: ServiceOptions) -> dict[str, str]:
    values = {"APPLIANCE_HOST": options.host, "APPLIANCE_PORT": str(options.port),
              "APPLIANCE_DATA_DIR": options.data_dir}
    if options.backup_dir and "BACKUP_DIR" in SETTINGS_BY_NAME:
        values["APPLIANCE_BACKUP_DIR"] = options.backup_dir
    return values


ENV_HEADER = f"""\
# Settings of the appliance service: APPLIANCE_<NAME>=value, one a line (README.md lists
# every setting); systemd reads this file (EnvironmentFile=). After a change:
#   systemctl restart appliance
# Written by {MARKER}: running it again sets HOST, PORT and DATA_DIR and
# keeps the other lines. Move the data directory only with install-service --data-dir,
# since the unit's ReadWritePaths= must follow it.
"""


def merge_env(existing: str, values: dict[str, str]) -> str:
    """`existing` env file text with `values` set (in place, or added at the end)."""
    lines = existing.splitlines() if existing.strip() else ENV_HEADER.splitlines()
    pending = dict(values)
    for index, line in enumerate(lines):
        name = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and name in pending:
            lines[index] = f"{name}={pending.pop(name)}"
    lines += [f"{name}={value}" for name, value in pending.items()]
    return "\n".join(lines) + "\n"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines as systemd's EnvironmentFile= reads them (comments, blank lines and
    one pair of surrounding quotes skipped)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        name, value = (part.strip() for part in line.split("=", 1))
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def existing_engine_groups() -> tuple[str, ...]:
    """The engine socket groups this machine has (the default of --group-for-engines)."""
    return tuple(name for name in ENGINE_GROUPS if group_exists(name))


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def wrapper_script() -> str:
    """The /usr/local/bin/appliance of an installation that is not the single binary."""
    argv = invocation.program()
    if argv == ["appliance"]:  # found on PATH: name the file itself, not the PATH lookup
        argv = [str(invocation.program_path())]
    return (f"#!/bin/sh\n# Written by {MARKER}: runs the appliance installed at\n"
            f"# {sys.prefix}\nexec {shlex.join(argv)} \"$@\"\n")


def hidden_from_service() -> list[str]:
    """Files this installation runs from that ProtectHome=yes hides from the service."""
    if invocation.frozen():
        return []
    import appliance  # here: only its location is wanted

    used = [Path(sys.executable).resolve(), Path(appliance.__file__).resolve()]
    return [str(path) for path in used
            if any(str(path) == top or str(path).startswith(top + "/")
                   for top in HIDDEN_FROM_SERVICE)]


@dataclass
class Installer:
    """Installs into `root` (None: this machine, as root); `say` gets each step."""

    root: Path | None
    say: Callable[[str], None]

    def at(self, path: Path) -> Path:
        return path if self.root is None else self.root / path.relative_to("/")

    @property
    def live(self) -> bool:
        return self.root is None

    def _require_root(self, verb: str) -> None:
        if self.live and os.geteuid() != 0:
            raise InstallError(f"{verb} changes the system and needs root: sudo "
                               f"{shlex.join(invocation.program())} {verb} ...; or pass "
                               "--root DIR to write the files under DIR instead")

    def _run(self, argv: list[str]) -> None:
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise InstallError(f"{argv[0]} is missing") from None
        except subprocess.CalledProcessError as exc:
            raise InstallError(f"{shlex.join(argv)} failed: {exc.stderr.strip()}") from None

    def _systemd_running(self) -> bool:
        return self.live and Path("/run/systemd/system").is_dir() and bool(
            shutil.which("systemctl"))

    # --- install -------------------------------------------------------------------

    def previous(self) -> dict[str, Any]:
        """The options the last install under this root was given, as far as its unit and
        settings file tell (an install again keeps what is not given anew)."""
        found: dict[str, Any] = {}
        unit = self.at(UNIT)
        if unit.is_file():
            text = unit.read_text()
            if (user := re.search(r"^User=(\S+)$", text, re.MULTILINE)) is not None:
                found["user"] = user.group(1)
            data = re.search(r"^Environment=APPLIANCE_DATA_DIR=(\S+)$", text, re.MULTILINE)
            if data is not None:
                found["data_dir"] = data.group(1)
            groups = re.search(r"^SupplementaryGroups=(.*)$", text, re.MULTILINE)
            found["engine_groups"] = tuple(groups.group(1).split()) if groups else ()
            paths = re.search(r"^ReadWritePaths=(.*)$", text, re.MULTILINE)
            extra = [path[1:] for path in (paths.group(1).split() if paths else ())
                     if path.startswith("-")]
            if extra:
                found["backup_dir"] = extra[0]
        env = self.at(ENV_FILE)
        values = read_env_file(env) if env.is_file() else {}
        for name, key in (("host", "APPLIANCE_HOST"), ("data_dir", "APPLIANCE_DATA_DIR")):
            if values.get(key):
                found[name] = values[key]
        if values.get("APPLIANCE_PORT", "").isdigit():
            found["port"] = int(values["APPLIANCE_PORT"])
        return found

    def install(self, options: ServiceOptions) -> None:
        self._require_root("install-service")
        options.check()
        hidden = hidden_from_service()
        if hidden:
            message = (f"this installation runs from {', '.join(hidden)}, which the service "
                       "cannot read (ProtectHome=yes): install the single binary instead "
                       "(scripts/build-binary, then sudo dist/appliance-... install-service)")
            if self.live:
                raise InstallError(message)
            self.say(f"warning: {message}")
        missing = [group for group in options.engine_groups if not group_exists(group)]
        if missing and self.live:
            raise InstallError(f"--group-for-engines: no group {', '.join(missing)} on this "
                               "machine (systemd would refuse to start the service); install "
                               "the engine first, or leave the group out")
        upgrade = self.at(UNIT).exists()
        written = self._install_program()
        self._create_user(options)
        for path in (options.data_dir, options.backup_dir):
            if path:
                self._create_private_dir(Path(path), options.user)
        self._write_env(options)
        self._write(UNIT, render_unit(options), 0o644)
        written.append(UNIT)
        self._record(written)
        if self._systemd_running():
            self._run(["systemctl", "daemon-reload"])
            self.say("systemctl daemon-reload: done")
        self._next_steps(options, upgrade)

    def _install_program(self) -> list[Path]:
        target = self.at(BIN)
        if invocation.frozen():
            source = Path(sys.executable).resolve()
            if target.exists() and target.resolve() == source:
                self.say(f"{BIN}: is the running binary already")
                return []
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(source, temp)
            temp.chmod(0o755)
            temp.replace(target)  # a rename: a running old binary keeps its own file
            self.say(f"{BIN}: copied from {source}")
        else:
            self._write(BIN, wrapper_script(), 0o755)
            self.say(f"{BIN}: a wrapper that runs the appliance in {sys.prefix}")
        return [BIN]

    def _create_user(self, options: ServiceOptions) -> None:
        argv = ["useradd", "--system", "--user-group", "--home-dir", options.data_dir,
                "--no-create-home", "--shell", "/usr/sbin/nologin", options.user]
        if not self.live:
            self.say(f"user {options.user}: not created (--root: nothing is written outside "
                     f"it); on the target machine: {shlex.join(argv)}")
        elif user_exists(options.user):
            self.say(f"user {options.user}: exists")
        else:
            self._run(argv)
            self.say(f"user {options.user}: created ({shlex.join(argv)})")

    def _create_private_dir(self, path: Path, user: str) -> None:
        target = self.at(path)
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o700)
        if self.live:
            entry = pwd.getpwnam(user)
            for top, dirs, files in os.walk(target):
                for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
                    os.lchown(name, entry.pw_uid, entry.pw_gid)
            self.say(f"{path}: mode 0700, owned by {user}")
        else:
            self.say(f"{path}: mode 0700 (not chown'ed to {user}: --root)")

    def _write_env(self, options: ServiceOptions) -> None:
        target = self.at(ENV_FILE)
        existing = target.read_text() if target.exists() else ""
        self._write(ENV_FILE, merge_env(existing, env_values(options)), 0o640)
        if self.live:
            os.chown(target, 0, pwd.getpwnam(options.user).pw_gid)
        self.say(f"{ENV_FILE}: HOST={options.host} PORT={options.port} "
                 f"DATA_DIR={options.data_dir}")

    def _write(self, path: Path, text: str, mode: int) -> None:
        target = self.at(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}")
        temp.write_text(text)
        temp.chmod(mode)
        temp.replace(target)
        if path == UNIT:
            self.say(f"{UNIT}: written")

    def _record(self, written: list[Path]) -> None:
        manifest = self.at(MANIFEST)
        known = manifest.read_text().split() if manifest.exists() else []
        paths = list(dict.fromkeys([*known, *(str(path) for path in written)]))
        self._write(MANIFEST, "\n".join(paths) + "\n", 0o644)

    def _next_steps(self, options: ServiceOptions, upgrade: bool) -> None:
        run_as = shlex.join(["sudo", "-u", options.user, "appliance"])
        self.say("")
        self.say("next steps:")
        if not self.live:
            self.say(f"  (the files are under {self.root}; copy them to the target machine "
                     f"and create the user there)")
        if upgrade:
            self.say("  systemctl restart appliance         # if it runs: the new program "
                     "and settings")
        self.say("  systemctl enable --now appliance    # start it now and at every boot")
        self.say("  journalctl -u appliance             # its log: the first-run set-up link")
        self.say(f"  {run_as} setup-link --env-file {ENV_FILE}   # a fresh set-up link")
        self.say(f"the dashboard: http://{options.host}:{options.port}/ (settings in "
                 f"{ENV_FILE})")

    # --- uninstall -----------------------------------------------------------------

    def uninstall(self) -> None:
        self._require_root("uninstall-service")
        if self._systemd_running():
            subprocess.run([shutil.which("systemctl") or "systemctl", "disable", "--now",
                            "appliance.service"], capture_output=True, timeout=120, check=False)
            self.say("systemctl disable --now appliance: done")
        unit = self.at(UNIT)
        user = (re.search(r"^User=(\S+)$", unit.read_text(), re.MULTILINE) if unit.is_file()
                else None)
        manifest = self.at(MANIFEST)
        if manifest.exists():
            listed = [Path(line) for line in manifest.read_text().split()]
        else:  # installed before the manifest existed, or by hand: only what is marked ours
            listed = [path for path in (UNIT, BIN)
                      if self.at(path).is_file() and self._marked(self.at(path))]
        for path in listed:
            if self.at(path).is_file() or self.at(path).is_symlink():
                self.at(path).unlink()
                self.say(f"{path}: removed")
        if manifest.exists():
            manifest.unlink()
        if self._systemd_running():
            self._run(["systemctl", "daemon-reload"])
        env = self.at(ENV_FILE)
        data_dir = read_env_file(env).get("APPLIANCE_DATA_DIR") if env.exists() else None
        kept = [str(ENV_FILE)] if env.exists() else []
        if data_dir:
            kept.insert(0, data_dir)
        if kept:
            name = user.group(1) if user else "appliance"
            self.say(f"kept: {', '.join(kept)} and the user {name}; to remove them too: "
                     f"rm -r {' '.join(kept)}; userdel {name}")

    @staticmethod
    def _marked(path: Path) -> bool:
        with path.open("rb") as handle:
            return MARKER.encode() in handle.read(1024)
