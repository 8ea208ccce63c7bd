"""The Incus driver: system containers through the Incus REST API.

The endpoint is `unix:///var/lib/incus/unix.socket` (the default when it is empty) or
`https://host:8443` with the options `client_cert` and `client_key` (paths to the PEM
files of a certificate the server trusts) and, optionally, `server_cert` (a path to the
server's certificate, used to verify it; without it the system's CAs are used). Other
options: `project` (Incus project, default `default`), `profile` (default `default`; its
root disk names the storage pool), `timeout` (seconds per request, default 30),
`create_timeout` (seconds for create/rebuild/publish, default 300) and `stop_timeout`
(seconds a reboot waits for a clean shutdown before forcing, default 30).

The ref of an instance is its Incus name, which is the spec's name (a hostname). Images
are local image aliases (or fingerprints). What the driver stores on the instance, so a
rebuild can redo it: the SSH keys and the default user, as `user.appliance.*` config
keys (public keys only; the password is never stored, so a rebuild leaves none).

Errors: the engine's 4xx answers are permanent (not found, invalid config, unknown
image, a name in use), connection failures, timeouts and 5xx are transient. A failed
background operation carries only a message; it is permanent unless the message speaks
of a timeout or a busy engine.

Disk size: the root disk gets a `size` on an instance-level override of the profile's
root device. Incus accepts it on every pool, but a `dir` pool only enforces it where the
backing filesystem has project quotas; elsewhere the size is recorded and not enforced.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

from appliance.drivers.base import (
    MISSING,
    RUNNING,
    STOPPED,
    Capabilities,
    Driver,
    DriverError,
    EngineInfo,
    ImageInfo,
    InstanceSpec,
    InstanceState,
    Limits,
    Sink,
)
from appliance.drivers.incus.api import (
    ARCHIVE_PREFIX,
    KEYS_CONFIG,
    USER_CONFIG,
    NotFound,
    quote_name,
)
from appliance.drivers.incus.copies import IncusCopies
from appliance.drivers.incus.metrics import IncusMetrics
from appliance.drivers.incus.terminal import IncusTerminals
from appliance.drivers.incus.transport import unix_session

DEFAULT_SOCKET = "/var/lib/incus/unix.socket"
CONSOLE_KEEP = 256 * 1024  # bytes of console output kept per instance
STREAM_CHUNK = 1 << 20  # bytes read at a time from a download
_TRANSIENT_WORDS = ("timeout", "timed out", "deadline", "busy", "try again", "temporar")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def _size_bytes(size: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", size or "")
    if not match or match.group(2).upper() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _seconds(options: dict[str, str], key: str, default: float) -> float:
    try:
        value = float(options.get(key) or default)
    except ValueError:
        value = 0
    if value <= 0:
        raise DriverError(f"the option {key} is a number of seconds, not "
                          f"{options.get(key)!r}", permanent=True)
    return value


def _operation_failure(operation: dict, what: str) -> DriverError:
    message = operation.get("err") or operation.get("status") or "failed"
    transient = operation.get("status") == "Cancelled" or any(
        word in message.lower() for word in _TRANSIENT_WORDS)
    return DriverError(f"{what}: {message}", permanent=not transient)


class IncusDriver(IncusTerminals, IncusCopies, IncusMetrics, Driver):
    engine = "incus"

    def __init__(self, endpoint: str = "", options: dict[str, str] | None = None) -> None:
        super().__init__(endpoint, options)
        self._timeout = _seconds(self.options, "timeout", 30)
        self._create_timeout = _seconds(self.options, "create_timeout", 300)
        self._stop_timeout = int(_seconds(self.options, "stop_timeout", 30))
        self._profile = self.options.get("profile") or "default"
        project = self.options.get("project") or "default"
        self._params = {} if project == "default" else {"project": project}
        self._lock = threading.Lock()
        self._server_info: dict | None = None
        self._root_device: tuple[str, dict] | None = None
        self._consoles: dict[str, str] = {}  # ref -> console output read so far
        target = endpoint or f"unix://{DEFAULT_SOCKET}"
        if target.startswith("unix://"):
            self._socket = target.removeprefix("unix://") or DEFAULT_SOCKET
            self._base = "http://incus"
            self._session = unix_session(self._socket)
        elif target.startswith("https://"):
            self._socket = ""
            self._base = target.rstrip("/")
            self._session = requests.Session()
            self._session.trust_env = False
            cert, key = self.options.get("client_cert"), self.options.get("client_key")
            if cert:  # a lone certificate file holds its key too
                self._session.cert = (cert, key) if key else cert
            self._session.verify = self.options.get("server_cert") or True
        else:
            raise DriverError(f"an Incus endpoint is unix:///path or https://host:port, "
                              f"not {endpoint!r}", permanent=True)

    # -- talking to the engine ---------------------------------------------------------

    def _send(self, method: str, path: str, *, timeout: float | None = None,
              raw: bool = False, into: Sink | None = None, **kwargs: Any) -> Any:
        """One request; the JSON envelope (or the bytes when `raw`; or, with `into`, the
        body is written there as it arrives and the byte count returned). Raises
        DriverError."""
        params = {**self._params, **kwargs.pop("params", {})}
        try:
            response = self._session.request(method, self._base + path, params=params,
                                             timeout=timeout or self._timeout,
                                             stream=into is not None, **kwargs)
            if into is not None and response.ok:
                count = 0
                for chunk in response.iter_content(STREAM_CHUNK):
                    into.write(chunk)
                    count += len(chunk)
                return count
        except requests.Timeout as exc:
            raise DriverError(f"Incus did not answer {method} {path} in time: {exc}") from exc
        except requests.exceptions.SSLError as exc:  # a certificate retrying cannot fix
            raise DriverError(f"TLS with Incus at {self.endpoint} failed: {exc}",
                              permanent=True) from exc
        except requests.RequestException as exc:
            # requests wraps urllib3's MaxRetryError, whose `reason` says what went wrong
            reason = exc.args[0] if exc.args else exc
            reason = getattr(reason, "reason", None) or reason
            raise DriverError(f"cannot reach Incus at {self.endpoint or self._socket}: "
                              f"{str(reason).rpartition('): ')[2]}") from exc
        except OSError as exc:  # requests cannot read the client certificate or key
            raise DriverError(f"cannot use the client certificate for {self.endpoint}: "
                              f"{exc}", permanent=True) from exc
        if raw and response.ok:
            return response.content
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"error": response.text[:200] or response.reason, "type": "error"}
        status = body.get("error_code") or response.status_code
        if body.get("type") == "error" or status >= 400:
            message = f"Incus refused {method} {path}: {body.get('error') or status}"
            if status == 404:
                raise NotFound(message)
            raise DriverError(message, permanent=status < 500 and status not in (408, 429))
        return body

    def _wait(self, operation: str, timeout: float, what: str) -> dict:
        """The operation once it is over (successful or not); transient error if it is not."""
        wait = max(1, int(timeout))
        try:
            body = self._send("GET", f"{operation}/wait", params={"timeout": wait},
                              timeout=wait + 15)
        except NotFound:
            raise
        except DriverError:  # the server answers an error when the wait itself times out
            body = self._send("GET", operation)
        result = body.get("metadata") or {}
        if result.get("status") in ("Running", "Pending", "Cancelling"):
            raise DriverError(f"{what}: not finished after {wait} s")
        return result

    def _call(self, method: str, path: str, *, what: str = "", wait: float | None = None,
              **kwargs: Any) -> Any:
        """A request whose operation, when it starts one, is waited for and checked."""
        body = self._send(method, path, **kwargs)
        if body.get("type") != "async":
            return body.get("metadata")
        what = what or f"{method} {path}"
        operation = self._wait(body["operation"], wait or self._timeout, what)
        if operation.get("status") != "Success":
            raise _operation_failure(operation, what)
        return operation.get("metadata") or {}

    def _server(self, refresh: bool = False) -> dict:
        with self._lock:
            cached = self._server_info
        if cached is None or refresh:
            cached = self._send("GET", "/1.0").get("metadata") or {}
            with self._lock:
                self._server_info = cached
        return cached

    def _instance(self, ref: str) -> dict:
        try:
            return self._call("GET", f"/1.0/instances/{quote_name(ref)}")
        except NotFound:
            raise DriverError(f"no instance {ref}", permanent=True) from None

    def _power(self, ref: str) -> str:
        try:
            state = self._call("GET", f"/1.0/instances/{quote_name(ref)}/state")
        except NotFound:
            return MISSING
        return RUNNING if state.get("status") == "Running" else STOPPED

    def _known_power(self, ref: str) -> str:
        power = self._power(ref)
        if power == MISSING:
            raise DriverError(f"no instance {ref}", permanent=True)
        return power

    def _change_state(self, ref: str, action: str, *, force: bool = False,
                      timeout: int = -1) -> None:
        body = {"action": action, "force": force, "timeout": timeout}
        wait = (timeout if timeout > 0 else 0) + self._timeout
        self._call("PUT", f"/1.0/instances/{quote_name(ref)}/state", json=body, wait=wait,
                   what=f"{action} {ref}")

    # -- the engine --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        try:
            environment = self._server().get("environment") or {}
        except DriverError:
            environment = {}
        # `instance_types` where the server lists it, else its drivers ("lxc | qemu")
        types = environment.get("instance_types")
        vm = ("virtual-machine" in types if types is not None
              else "qemu" in str(environment.get("driver", "")))
        if self._socket:  # the engine is on this host: KVM and vsock must be here too
            vm = vm and os.path.exists("/dev/kvm") and os.path.exists("/dev/vhost-vsock")
        # Restoring an archive rebuilds the instance from it (Incus 5.x's instances_rebuild)
        try:
            rebuild = "instances_rebuild" in (self._server().get("api_extensions") or [])
        except DriverError:
            rebuild = False
        return Capabilities(snapshots=True, backups=rebuild, resize_live=True, console=True,
                            terminal=True, exec=True, vm=vm, metrics=True)

    def info(self) -> EngineInfo:
        server = self._server(refresh=True)
        if server.get("auth") != "trusted":
            raise DriverError("Incus does not trust this client (add its certificate with "
                              "`incus config trust add-certificate`)", permanent=True)
        environment = server.get("environment") or {}
        details = {key: str(environment[key]) for key in
                   ("server_name", "driver", "driver_version", "kernel_version", "storage")
                   if environment.get(key)}
        cpus, memory_mb = self._resources()
        return EngineInfo("incus", str(environment.get("server_version") or "unknown"),
                          details=details, vcpus=cpus, memory_mb=memory_mb)

    def _resources(self) -> tuple[int | None, int | None]:
        """The host's CPUs and memory in MB (GET /1.0/resources); None for what it will
        not say."""
        try:
            found = self._call("GET", "/1.0/resources") or {}
        except DriverError:
            return None, None
        cpus = (found.get("cpu") or {}).get("total")
        memory = (found.get("memory") or {}).get("total")
        return (cpus if isinstance(cpus, int) and cpus > 0 else None,
                memory // 2**20 if isinstance(memory, int) and memory > 0 else None)

    def images(self) -> list[ImageInfo]:
        """The local images' aliases (the driver creates containers: no VM images)."""
        found = []
        for image in self._call("GET", "/1.0/images", params={"recursion": 1}) or []:
            if image.get("type", "container") != "container":
                continue
            properties = image.get("properties") or {}
            for alias in image.get("aliases") or []:
                if alias["name"].startswith(ARCHIVE_PREFIX):
                    continue
                found.append(ImageInfo(
                    alias["name"], alias.get("description") or properties.get("description", ""),
                    properties.get("os", ""), properties.get("release", ""), image.get("size")))
        return sorted(found, key=lambda info: info.ref)

    def inventory(self, prefix: str) -> list[str]:
        urls = self._call("GET", "/1.0/instances") or []
        names = (url.rstrip("/").rpartition("/")[2] for url in urls)
        return sorted(name for name in names if name.startswith(prefix))

    def _image_source(self, image: str) -> dict:
        """The `source` of a create/rebuild; permanent error when the engine lacks it."""
        try:
            self._call("GET", f"/1.0/images/aliases/{quote_name(image)}")
            return {"type": "image", "alias": image}
        except NotFound:
            pass
        if re.fullmatch(r"[0-9a-f]{12,64}", image):
            try:
                found = self._call("GET", f"/1.0/images/{image}")
                return {"type": "image", "fingerprint": found["fingerprint"]}
            except NotFound:
                pass
        raise DriverError(f"unknown image {image}", permanent=True)

    def _root_disk(self) -> tuple[str, dict]:
        """The profile's root disk device (its name and settings): where size goes."""
        with self._lock:
            if self._root_device is not None:
                return self._root_device
        profile = self._call("GET", f"/1.0/profiles/{quote_name(self._profile)}")
        for name, device in (profile.get("devices") or {}).items():
            if device.get("type") == "disk" and device.get("path") == "/":
                with self._lock:
                    self._root_device = (name, dict(device))
                return name, dict(device)
        raise DriverError(f"the Incus profile {self._profile} has no root disk", permanent=True)

    def _limits_config(self, limits: Limits) -> tuple[dict, dict]:
        name, root = self._root_disk()
        config = {"limits.cpu": str(limits.vcpus), "limits.memory": f"{limits.memory_mb}MiB"}
        return config, {name: {**root, "size": f"{limits.disk_gb}GiB"}}

    # -- lifecycle ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec, started: Callable[[], None] | None = None) -> str:
        source = self._image_source(spec.image)
        if self._power(spec.name) != MISSING:
            raise DriverError(f"an instance named {spec.name} exists", permanent=True)
        if spec.password is not None and ("\n" in spec.password or not spec.password):
            raise DriverError("a password is one non-empty line", permanent=True)
        config, devices = self._limits_config(spec.limits)
        config.update({f"environment.{key}": value for key, value in spec.env.items()})
        config.update({USER_CONFIG: spec.user, KEYS_CONFIG: "\n".join(spec.ssh_keys)})
        self._call("POST", "/1.0/instances", wait=self._create_timeout,
                   what=f"creating {spec.name}",
                   json={"name": spec.name, "type": "container", "source": source,
                         "profiles": [self._profile], "config": config, "devices": devices})
        try:
            self._install_ssh_keys(spec.name, spec.user, spec.ssh_keys)
            self.start(spec.name)
            if started is not None:
                started()
            if spec.password is not None:
                self._set_password(spec.name, spec.user, spec.password)
        except DriverError:
            self._discard(spec.name)  # a retry of the create starts from nothing
            raise
        return spec.name

    def _discard(self, ref: str) -> None:
        try:
            self.delete(ref)
        except DriverError:
            pass

    def start(self, ref: str) -> None:
        if self._known_power(ref) == RUNNING:
            return
        try:
            self._change_state(ref, "start")
        except DriverError:
            if self._power(ref) != RUNNING:  # not a race with another start
                raise

    def stop(self, ref: str, graceful: bool = True, timeout: int = 30) -> None:
        if self._known_power(ref) != RUNNING:
            return
        if graceful:
            try:
                self._change_state(ref, "stop", timeout=max(1, int(timeout)))
                return
            except DriverError:
                if self._power(ref) != RUNNING:
                    return
        try:
            self._change_state(ref, "stop", force=True)
        except DriverError:
            if self._power(ref) == RUNNING:
                raise

    def reboot(self, ref: str) -> None:
        if self._known_power(ref) != RUNNING:
            self.start(ref)
            return
        try:
            self._change_state(ref, "restart", timeout=self._stop_timeout)
        except DriverError:
            self.reset(ref)  # the init did not shut down in time

    def reset(self, ref: str) -> None:
        self.stop(ref, graceful=False)
        self.start(ref)

    def state(self, ref: str) -> InstanceState:
        try:
            state = self._call("GET", f"/1.0/instances/{quote_name(ref)}/state")
        except NotFound:
            return InstanceState(MISSING)
        if state.get("status") != "Running":
            return InstanceState(STOPPED)
        cpu = (state.get("cpu") or {}).get("usage")
        memory = (state.get("memory") or {}).get("usage")
        return InstanceState(RUNNING, addresses_of(state.get("network") or {}),
                             cpu_seconds=cpu / 1e9 if cpu is not None else None,
                             memory_bytes=memory)

    def delete(self, ref: str) -> None:
        with self._lock:
            self._consoles.pop(ref, None)
        power = self._power(ref)
        if power == MISSING:
            return
        if power == RUNNING:
            self.stop(ref, graceful=False)
        try:
            self._call("DELETE", f"/1.0/instances/{quote_name(ref)}", what=f"deleting {ref}",
                       wait=self._create_timeout)
        except NotFound:
            pass

    def resize(self, ref: str, limits: Limits) -> None:
        instance = self._instance(ref)
        config, devices = self._limits_config(limits)
        name = next(iter(devices))
        current = (instance.get("expanded_devices") or {}).get(name) or devices[name]
        current_size = _size_bytes(current.get("size", ""))
        if current_size and limits.disk_gb * 2**30 < current_size:
            raise DriverError("the disk cannot shrink", permanent=True)
        devices = {name: {**current, "size": devices[name]["size"]}}
        self._call("PATCH", f"/1.0/instances/{quote_name(ref)}", what=f"resizing {ref}",
                   json={"config": config, "devices": devices})

    def rebuild(self, ref: str, image: str) -> str:
        source = self._image_source(image)
        instance = self._instance(ref)
        self.stop(ref, graceful=False)
        if "instances_rebuild" in (self._server().get("api_extensions") or []):
            self._call("POST", f"/1.0/instances/{quote_name(ref)}/rebuild", json={"source": source},
                       wait=self._create_timeout, what=f"rebuilding {ref}")
        else:
            config = {key: value for key, value in (instance.get("config") or {}).items()
                      if not key.startswith(("volatile.", "image."))}
            self.delete(ref)
            self._call("POST", "/1.0/instances", wait=self._create_timeout,
                       what=f"recreating {ref}",
                       json={"name": ref, "type": instance.get("type") or "container",
                             "source": source, "profiles": instance.get("profiles") or [],
                             "config": config, "devices": instance.get("devices") or {}})
        config = instance.get("config") or {}
        keys = tuple(line for line in config.get(KEYS_CONFIG, "").splitlines() if line)
        self._install_ssh_keys(ref, config.get(USER_CONFIG) or "root", keys)
        self.start(ref)
        return ref

    # -- inside the instance -----------------------------------------------------------

    def _files(self, ref: str, path: str) -> str:
        return f"/1.0/instances/{quote_name(ref)}/files?path={quote(path)}"

    def _account(self, ref: str, user: str) -> tuple[int, int, str]:
        """(uid, gid, home) of `user`, read from the instance's /etc/passwd."""
        try:
            passwd = self._send("GET", self._files(ref, "/etc/passwd"), raw=True)
        except NotFound:
            passwd = b""
        for line in passwd.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[0] == user and fields[2].isdigit():
                return int(fields[2]), int(fields[3] or 0), fields[5] or "/"
        if user == "root":
            return 0, 0, "/root"
        raise DriverError(f"the image has no user {user}", permanent=True)

    def _push(self, ref: str, path: str, mode: str, *, owner: tuple[int, int] = (0, 0),
              content: bytes | None = None) -> None:
        """Write a file (or, without content, make a directory) through the file API."""
        uid, gid = owner
        headers = {"X-Incus-uid": str(uid), "X-Incus-gid": str(gid), "X-Incus-mode": mode,
                   "X-Incus-type": "file" if content is not None else "directory",
                   "X-Incus-write": "overwrite", "Content-Type": "application/octet-stream"}
        self._call("POST", self._files(ref, path), headers=headers, data=content or b"",
                   what=f"writing {path} in {ref}")

    def _install_ssh_keys(self, ref: str, user: str, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        uid, gid, home = self._account(ref, user)
        directory = home.rstrip("/") + "/.ssh"
        try:
            self._send("GET", self._files(ref, directory), raw=True)
        except NotFound:
            self._push(ref, directory, "0700", owner=(uid, gid))
        self._push(ref, f"{directory}/authorized_keys", "0600", owner=(uid, gid),
                   content="".join(key.strip() + "\n" for key in keys).encode())

    def set_password(self, ref: str, user: str, password: str) -> None:
        if "\n" in password or not password:
            raise DriverError("a password is one non-empty line", permanent=True)
        if self._known_power(ref) != RUNNING:
            raise DriverError(f"{ref} is not running", permanent=True)
        self._set_password(ref, user, password)

    def _set_password(self, ref: str, user: str, password: str) -> None:
        # The password goes through a root-only file, never through argv or the engine's
        # operation records; the command that reads it removes it. An unknown user is
        # chpasswd's failure (permanent).
        path = f"/root/.appliance-chpasswd-{uuid.uuid4().hex[:8]}"
        self._push(ref, path, "0600", content=f"{user}:{password}\n".encode())
        try:
            code, output = self.exec(ref, ["sh", "-c", 'chpasswd < "$1"; code=$?; rm -f "$1"; '
                                           'exit $code', "sh", path])
        except DriverError:
            try:
                self._call("DELETE", self._files(ref, path))
            except DriverError:
                pass
            raise
        if code == 127:
            raise DriverError("the image has no chpasswd, so it cannot take a password",
                              permanent=True)
        if code != 0:
            raise DriverError(f"chpasswd failed ({code}): {output.strip()}", permanent=True)

    def logs(self, ref: str, lines: int = 200) -> str:
        """The console's last `lines` lines. Incus hands out a running container's console
        ring buffer once (a read drains it), so the driver keeps what it has read, per
        instance, up to CONSOLE_KEEP bytes; a stopped instance's saved log is shown when
        this driver has read nothing of it yet."""
        power = self._known_power(ref)
        with self._lock:
            kept = self._consoles.get(ref, "")
        if power == RUNNING or not kept:
            content = self._send("GET", f"/1.0/instances/{quote_name(ref)}/console", raw=True)
            with self._lock:
                kept = (self._consoles.get(ref, "") + content.decode("utf-8", "replace")
                        .replace("\r\n", "\n"))[-CONSOLE_KEEP:]
                if power == RUNNING:
                    self._consoles[ref] = kept
        return "\n".join(kept.splitlines()[-lines:]) if lines > 0 else ""

    def exec(self, ref: str, argv: list[str], timeout: int = 30) -> tuple[int, str]:
        """Run `argv` (no stdin) with its output recorded by the engine: stdout, then
        stderr. A command still running after `timeout` s is left to finish and reported
        as a transient error; a stopped instance is a permanent one."""
        body = self._send("POST", f"/1.0/instances/{quote_name(ref)}/exec", json={
            "command": list(argv), "environment": {}, "interactive": False,
            "wait-for-websocket": False, "record-output": True})
        what = f"running {argv[0] if argv else 'nothing'} in {ref}"
        operation = self._wait(body["operation"], timeout, what)
        result = operation.get("metadata") or {}
        if "return" not in result:
            raise _operation_failure(operation, what)
        output = b""
        for _, log in sorted((result.get("output") or {}).items()):
            try:
                output += self._send("GET", log, raw=True)
                self._send("DELETE", log)
            except NotFound:
                pass
        return int(result["return"]), output.decode("utf-8", "replace")

    def close(self) -> None:
        self._session.close()


def addresses_of(network: dict) -> tuple[str, ...]:
    """Global addresses, eth0's first within each family, IPv4 before IPv6."""
    names = sorted((name for name in network if name != "lo"), key=lambda n: (n != "eth0", n))
    found: dict[str, list[str]] = {"inet": [], "inet6": []}
    for name in names:
        for address in network[name].get("addresses") or []:
            value = address.get("address", "")
            if (address.get("scope") == "global" and address.get("family") in found
                    and not value.startswith(("127.", "169.254.", "fe80", "::1"))):
                found[address["family"]].append(value)
    return tuple(found["inet"] + found["inet6"])
