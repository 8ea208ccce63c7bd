"""The Docker driver: app-style instances as Docker containers, through the Docker SDK.

The endpoint is `unix:///var/run/docker.sock` (the default when it is empty) or
`tcp://host:2376`; TLS is used when any of the options `ca_cert`, `client_cert`,
`client_key` (paths to PEM files) is set, or `tls` is `true` (the server is then verified
against `ca_cert`, else the system's CAs). Other options: `timeout` (seconds per request,
default 60), `stop_timeout` (seconds a reboot waits for a clean shutdown, default 30),
`start_timeout` (seconds a create waits for the container to run, default 30) and
`start_settle` (seconds a new container must keep running after its start to count as
started, 0.1: Docker restarts a crashed init after 0.1 s; setting the password counts).

The ref of an instance is its container name, which is the spec's name; the hostname is
the same. A container this driver did not create (no `appliance.managed=true` label) is
never touched: under its name the instance is `missing`. Images are local images (the
driver never pulls); an image's ref is its first tag, `:latest` left out.

Limits: `NanoCpus` = vcpus x 1e9 and `Memory` = `MemorySwap` (no swap), both changed live
by `resize`. The disk is a `storage_opt size=` only where the storage driver can enforce
it (btrfs, zfs, overlay2 on xfs mounted with pquota, which is tried and remembered when
refused). Everywhere else Docker cannot limit a container's disk: the size is only
recorded in the label `appliance.disk_gb` (the size at creation: labels cannot change).

What the driver keeps on the container, so a rebuild can redo it: labels with the SSH
keys (public keys only), the default user, the disk size and the names of the spec's
environment variables (their values are in the container's config). The password is
never stored, so a rebuild leaves none. Backup archives are `docker save`s of `docker
commit`s (the filesystem, not volumes the image may declare) and private networks are
user-defined bridges: see copies.py and networks.py. A rebuild or restore makes a new
container under a temporary name, swaps the names, then removes the old one, so a failure
leaves the instance as it was.

Errors: the engine's 4xx answers are permanent (unknown image or ref, invalid settings,
a name in use); connection failures, timeouts and 5xx are transient. No SDK exception
escapes. Firewalls are not supported yet.

Costs: `state` is one inspect (no usage figures: a stats sample takes up to a second;
`metrics` reads many at once, see metrics.py).
`exec` output is stdout and stderr
as they arrive on two pipes, so lines of the two are not kept in order.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import docker
import docker.errors
import docker.tls
import docker.types
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
    Terminal,
)
from appliance.drivers.docker.copies import DockerCopies
from appliance.drivers.docker.files import DockerFiles
from appliance.drivers.docker.metrics import DockerMetrics
from appliance.drivers.docker.names import (
    ARCHIVES,
    BACKUPS,
    INSTANCE,
    MANAGED,
    RESTORED,
    networks_of,
)
from appliance.drivers.docker.networks import DockerNetworks
from appliance.drivers.docker.terminal import DockerTerminal, login_shell

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
DISK, USER, KEYS, ENV = "appliance.disk_gb", "appliance.user", "appliance.ssh_keys", "appliance.env"
# Docker statuses: running, paused and restarting count as powered on.
_ON = ("running", "paused", "restarting")
_OUTPUT_MAX = 65536  # bytes of a command's output kept
_PERMANENT_SDK_ERRORS = (docker.errors.InvalidArgument, docker.errors.InvalidRepository,
                         docker.errors.InvalidVersion, docker.errors.TLSParameterError,
                         docker.errors.NullResource)


class DockerDriver(DockerFiles, DockerCopies, DockerNetworks, DockerMetrics, Driver):
    engine = "docker"

    def __init__(self, endpoint: str = "", options: dict[str, str] | None = None) -> None:
        super().__init__(endpoint, options)
        self._timeout = float(self.options.get("timeout") or 60)
        self._stop_timeout = int(self.options.get("stop_timeout") or 30)
        self._start_timeout = float(self.options.get("start_timeout") or 30)
        self._settle = float(self.options.get("start_settle") or 0.1)
        self._base_url = endpoint or DEFAULT_ENDPOINT
        if not self._base_url.startswith(("unix://", "tcp://")):
            raise DriverError(f"a Docker endpoint is unix:///path or tcp://host:port, "
                              f"not {endpoint!r}", permanent=True)
        self._tls: docker.tls.TLSConfig | bool = False
        if self._base_url.startswith("tcp://"):
            with self._errors("configuring TLS"):
                self._tls = _tls_config(self.options)
        self._lock = threading.Lock()
        self._docker: docker.DockerClient | None = None
        self._disk_quota: bool | None = None  # can storage_opt size work here? (cached)

    # -- talking to the engine ---------------------------------------------------------

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn whatever the SDK raises into DriverError, permanent when retrying cannot help."""
        try:
            yield
        except DriverError:
            raise
        except docker.errors.APIError as exc:  # before requests': it is an HTTPError
            status = exc.status_code or 500
            permanent = 400 <= status < 500 and status not in (408, 429)
            raise DriverError(f"{what}: Docker refused ({status}): "
                              f"{exc.explanation or exc}", permanent=permanent) from exc
        except requests.exceptions.Timeout as exc:
            raise DriverError(f"{what}: Docker did not answer in time: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise DriverError(f"{what}: cannot reach Docker at {self._base_url}: {exc}") from exc
        except _PERMANENT_SDK_ERRORS as exc:
            raise DriverError(f"{what}: {exc}", permanent=True) from exc
        except (docker.errors.DockerException, OSError) as exc:  # e.g. the version probe
            raise DriverError(f"{what}: cannot use Docker at {self._base_url}: {exc}") from exc

    @property
    def _client(self) -> docker.DockerClient:
        """The SDK client, made on first use (making it asks the daemon its API version)."""
        with self._lock:
            if self._docker is None:
                with self._errors("connecting to Docker"):
                    # The stubs say int; the SDK hands it to requests, which takes seconds
                    # as a float.
                    self._docker = docker.DockerClient(
                        base_url=self._base_url, tls=self._tls, version="auto",
                        timeout=self._timeout)  # type: ignore[arg-type]
            return self._docker

    def _find(self, ref: str) -> Any:
        """The container of `ref`, or None when there is none this driver manages."""
        with self._errors(f"looking up {ref}"):
            try:
                container = self._client.containers.get(ref)
            except docker.errors.NotFound:
                return None
        # get() also matches ID prefixes: only the container named `ref` is the instance.
        if container.name != ref or container.labels.get(MANAGED) != "true":
            return None
        return container

    def _get(self, ref: str) -> Any:
        container = self._find(ref)
        if container is None:
            raise DriverError(f"no instance {ref}", permanent=True)
        return container

    def _require_image(self, image: str, what: str = "image") -> Any:
        with self._errors(f"looking up the {what} {image}"):
            try:
                return self._client.images.get(image)
            except docker.errors.NotFound:
                raise DriverError(f"unknown {what} {image}", permanent=True) from None

    def _remove_image(self, image: str | None, untagged_only: bool = False) -> None:
        """Untag (or delete, when it was the last tag) an image; missing or in use is fine.
        `untagged_only`: an image id a tag moved away from, left alone while still tagged
        (removing it by id would drop its last tag)."""
        try:
            with self._errors(f"removing the image {image}"):
                if image and not (untagged_only and self._client.images.get(image).tags):
                    self._client.images.remove(image)
        except DriverError as exc:
            if not exc.permanent:
                raise

    # -- the engine --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(snapshots=True, backups=True, networks=True, resize_live=True,
                            console=True, terminal=True, exec=True, metrics=True)

    def info(self) -> EngineInfo:
        with self._errors("asking Docker for its version"):
            version = self._client.version()
            system = self._client.info()
        details = {"api_version": str(version.get("ApiVersion", "")),
                   "os": str(system.get("OperatingSystem", "")),
                   "kernel_version": str(system.get("KernelVersion", "")),
                   "storage_driver": str(system.get("Driver", "")),
                   "disk_limits": "storage-opt" if self._quota_possible() else "recorded only"}
        cpus, memory = system.get("NCPU"), system.get("MemTotal")
        return EngineInfo("docker", str(version.get("Version") or "unknown"),
                          details={key: value for key, value in details.items() if value},
                          vcpus=int(cpus) if isinstance(cpus, int) and cpus > 0 else None,
                          memory_mb=(int(memory) // 2**20 if isinstance(memory, int)
                                     and memory > 0 else None))

    def images(self) -> list[ImageInfo]:
        with self._errors("listing images"):
            listed = self._client.images.list()
        found = []
        for image in listed:
            tags = [tag for tag in image.tags
                    if not tag.startswith((BACKUPS + "/", RESTORED + "/", ARCHIVES + "/"))]
            if not tags:
                continue
            labels = image.labels or {}
            description = (labels.get("org.opencontainers.image.description")
                           or labels.get("org.opencontainers.image.title")
                           or image.attrs.get("Comment") or tags[0])
            found.append(ImageInfo(tags[0].removesuffix(":latest"), description,
                                   release=labels.get("org.opencontainers.image.version", ""),
                                   size_bytes=image.attrs.get("Size")))
        return sorted(found, key=lambda info: info.ref)

    def _quota_possible(self) -> bool:
        """Whether the storage driver may enforce `storage_opt size=` (refusals are remembered)."""
        if self._disk_quota is None:
            with self._errors("asking Docker for its storage driver"):
                system = self._client.info()
            status = dict(system.get("DriverStatus") or [])
            driver = system.get("Driver")
            self._disk_quota = driver in ("btrfs", "zfs") or (
                driver == "overlay2" and status.get("Backing Filesystem") == "xfs")
        return self._disk_quota

    # -- lifecycle ---------------------------------------------------------------------

    def create(self, spec: InstanceSpec, started: Callable[[], None] | None = None) -> str:
        self._require_image(spec.image)
        password = spec.password
        if password is not None and ("\n" in password or not password):
            raise DriverError("a password is one non-empty line", permanent=True)
        labels = {MANAGED: "true", INSTANCE: spec.name, DISK: str(spec.limits.disk_gb),
                  USER: spec.user, KEYS: "\n".join(spec.ssh_keys), ENV: ",".join(spec.env)}
        container = self._create_container(spec.name, spec.image, spec.limits, labels=labels,
                                           env=dict(spec.env))
        try:
            self._install_ssh_keys(container, spec.user, spec.ssh_keys)
            self._start(container, settle=self._settle, started=started,
                        meanwhile=None if password is None else
                        lambda: self._apply_password(container, spec.user, password))
        except DriverError:
            self._discard(container)  # a retry of the create starts from nothing
            raise
        return spec.name

    def _create_container(self, name: str, image: str, limits: Limits, *, labels: dict,
                          env: dict[str, str], hostname: str = "") -> Any:
        settings: dict[str, Any] = {
            "image": image, "name": name, "hostname": hostname or name, "labels": labels,
            "environment": env, "detach": True, "restart_policy": {"Name": "unless-stopped"},
            **_resources(limits)}
        with self._errors(f"creating {hostname or name}"):
            if self._quota_possible():
                try:
                    return self._client.containers.create(
                        storage_opt={"size": f"{limits.disk_gb}G"}, **settings)
                except docker.errors.APIError as exc:
                    if not re.search(r"storage.?opt|quota", str(exc.explanation), re.I):
                        raise
                    self._disk_quota = False  # e.g. xfs without pquota: record only
            return self._client.containers.create(**settings)

    def _discard(self, container: Any) -> None:
        try:
            with self._errors(f"removing {container.name}"):
                container.remove(force=True)
        except DriverError:
            pass

    def _start(self, container: Any, settle: float = 0.0,
               meanwhile: Callable[[], None] | None = None,
               started: Callable[[], None] | None = None) -> None:
        """Start; return once Docker reports it running. Permanent error when its init ends,
        watched until `settle` s after the start for a new container (Docker restarts a
        crashing init after 0.1 s, so this is best effort). `started` is called when Docker
        first reports it running; `meanwhile` (setting the password) runs in the watch: a
        container that ends meanwhile is reported as such, not as the failure of
        `meanwhile`."""
        failure = None
        with self._errors(f"starting {container.name}"):
            container.start()
            watched_until = time.monotonic() + settle
            deadline = time.monotonic() + self._start_timeout
            container.reload()
            while container.status == "created" and time.monotonic() < deadline:
                time.sleep(0.1)
                container.reload()
            restarts = container.attrs.get("RestartCount")
            if container.status == "running" and started is not None:
                started()
            if container.status == "running" and (settle or meanwhile):
                if meanwhile is not None:
                    try:
                        meanwhile()
                    except DriverError as exc:
                        failure = exc
                time.sleep(max(0.0, watched_until - time.monotonic()))
                container.reload()
            if container.status in ("running", "paused") and (
                    container.attrs.get("RestartCount") == restarts):
                if failure is not None:
                    raise failure
                return
        status, code = container.status, (container.attrs.get("State") or {}).get("ExitCode")
        raise DriverError(f"{container.name} did not keep running ({status}, exit code {code}): "
                          f"{self._tail(container, 5)}", permanent=status != "created")

    def _tail(self, container: Any, lines: int) -> str:
        with self._errors(f"reading the log of {container.name}"):
            output = container.logs(stdout=True, stderr=True, tail=lines)
        return output.decode("utf-8", "replace").replace("\r\n", "\n")

    def _is_on(self, container: Any) -> bool:
        return container.status in _ON

    def start(self, ref: str) -> None:
        container = self._get(ref)
        if not self._is_on(container):
            self._start(container)

    def stop(self, ref: str, graceful: bool = True, timeout: int = 30) -> None:
        container = self._get(ref)
        if not self._is_on(container):
            return
        try:
            with self._errors(f"stopping {ref}"):
                if graceful:
                    container.stop(timeout=max(1, int(timeout)))
                else:
                    container.kill()
        except DriverError:
            if self._is_on(self._get(ref)):  # not a race with another stop
                raise

    def reboot(self, ref: str) -> None:
        container = self._get(ref)
        if not self._is_on(container):
            self._start(container)
            return
        with self._errors(f"restarting {ref}"):
            container.restart(timeout=self._stop_timeout)

    def reset(self, ref: str) -> None:
        self.stop(ref, graceful=False)
        self._start(self._get(ref))

    def state(self, ref: str) -> InstanceState:
        """Power and addresses from the container's inspect data. No usage figures: a
        stats sample takes Docker up to a second per container (its collector's tick),
        which a reconcile of many instances cannot afford."""
        container = self._find(ref)
        if container is None:
            return InstanceState(MISSING)
        if not self._is_on(container):
            return InstanceState(STOPPED)
        return InstanceState(RUNNING, _addresses(networks_of(container)))

    def delete(self, ref: str) -> None:
        """Remove the container (and any left over by an interrupted rebuild) and its
        backups' images."""
        containers = self._containers_of(ref)
        with self._errors(f"deleting {ref}"):
            found = self._find(ref)
            if found is not None and found.id not in {c.id for c in containers}:
                containers.append(found)
            for container in containers:
                try:
                    container.remove(force=True)
                except docker.errors.NotFound:
                    pass
            for repository in (f"{BACKUPS}/{ref.lower()}", f"{RESTORED}/{ref.lower()}"):
                for image in self._client.images.list(name=repository):
                    for tag in image.tags:
                        if tag.startswith(repository + ":"):
                            self._remove_image(tag)

    def inventory(self, prefix: str) -> list[str]:
        """Names of the containers this driver made (labelled managed) starting with prefix."""
        with self._errors("listing containers"):
            listed = self._client.containers.list(all=True,
                                                  filters={"label": [f"{MANAGED}=true"]})
        return sorted(c.name for c in listed if c.name and c.name.startswith(prefix))

    def _containers_of(self, ref: str) -> list:
        """Every container labelled with the instance: its own, and any a rebuild left."""
        with self._errors(f"listing the containers of {ref}"):
            return self._client.containers.list(
                all=True, filters={"label": [f"{MANAGED}=true", f"{INSTANCE}={ref}"]})

    def resize(self, ref: str, limits: Limits) -> None:
        """CPU and memory change live. Docker cannot resize a container's disk: where the
        size is enforced a bigger disk recreates the container from a commit of it (it
        restarts); elsewhere the size was only ever a record."""
        container = self._get(ref)
        current = _limits_of(container)
        if limits.disk_gb < current.disk_gb:
            raise DriverError("the disk cannot shrink", permanent=True)
        update = {"NanoCpus": int(limits.vcpus * 1e9), "Memory": limits.memory_mb * 2**20,
                  "MemorySwap": limits.memory_mb * 2**20}
        with self._errors(f"resizing {ref}"):
            api = self._client.api
            response = api.post(f"{api.base_url}/v{api.api_version}/containers/"
                                f"{container.id}/update", json=update, timeout=self._timeout)
            # The SDK's update() cannot set NanoCpus; its error mapping still applies.
            try:
                response.raise_for_status()
            except requests.exceptions.HTTPError as exc:
                docker.errors.create_api_error_from_http_exception(exc)
        if limits.disk_gb != current.disk_gb and self._disk_enforced(container):
            previous = self._commit(container, f"{RESTORED}/{ref.lower()}", "latest")
            self._recreate(ref, f"{RESTORED}/{ref.lower()}:latest", limits,
                           start=self._is_on(container))
            self._remove_image(previous, untagged_only=True)

    def _disk_enforced(self, container: Any) -> bool:
        return bool((container.attrs.get("HostConfig") or {}).get("StorageOpt"))

    def rebuild(self, ref: str, image: str) -> str:
        self._require_image(image)
        self._recreate(ref, image)
        self._remove_image(f"{RESTORED}/{ref.lower()}:latest")  # no longer the instance's
        return ref

    def _recreate(self, ref: str, image: str, limits: Limits | None = None,
                  start: bool = True) -> None:
        """Replace the container of `ref` by a new one from `image` with the same name,
        labels, keys, environment and limits (or `limits`); the old one goes last."""
        old = self._get(ref)
        for leftover in self._containers_of(ref):
            if leftover.id != old.id:  # from an interrupted rebuild
                self._discard(leftover)
        labels = {key: value for key, value in old.labels.items() if key.startswith("appliance.")}
        limits = limits or _limits_of(old)
        labels.update({MANAGED: "true", INSTANCE: ref, DISK: str(limits.disk_gb)})
        names = [name for name in labels.get(ENV, "").split(",") if name]
        env = dict(item.partition("=")[::2] for item in
                   (old.attrs.get("Config") or {}).get("Env") or [])
        keys = tuple(key for key in labels.get(KEYS, "").splitlines() if key)
        private = [name for name in networks_of(old) if name != "bridge"]
        suffix = uuid.uuid4().hex[:8]
        new = self._create_container(f"{ref}.new-{suffix}", image, limits, labels=labels,
                                     env={name: env[name] for name in names if name in env},
                                     hostname=ref)
        try:
            self._install_ssh_keys(new, labels.get(USER) or "root", keys)
            with self._errors(f"replacing {ref}"):
                for name in private:  # addresses on them are given anew
                    self._client.networks.get(name).connect(new)
                old.rename(f"{ref}.old-{suffix}")  # it keeps running until removed
                try:
                    new.rename(ref)
                except docker.errors.APIError:
                    old.rename(ref)
                    raise
        except DriverError:
            self._discard(new)
            raise
        self._discard(old)  # if it stays, the next rebuild or the delete removes it
        if start:
            self._start(new, settle=self._settle)

    # -- inside the instance -----------------------------------------------------------

    def logs(self, ref: str, lines: int = 200) -> str:
        container = self._get(ref)
        return self._tail(container, lines) if lines > 0 else ""

    def exec(self, ref: str, argv: list[str], timeout: int = 30) -> tuple[int, str]:
        """Run `argv` (stdout and stderr combined); a command still running after
        `timeout` s is left to finish and reported as a transient error."""
        if not argv:
            raise DriverError("nothing to run", permanent=True)
        return self._run(self._get(ref), list(argv), timeout)

    def open_terminal(self, ref: str, cols: int = 80, rows: int = 24) -> Terminal:
        container = self._get(ref)
        if not self._is_on(container):
            raise DriverError(f"{ref} is not running", permanent=True)
        api = self._client.api
        with self._errors(f"opening a console on {ref}"):
            token = uuid.uuid4().hex
            exec_id = api.exec_create(container.id, login_shell(token), stdin=True, tty=True,
                                      stdout=True, stderr=True,
                                      environment={"TERM": "xterm-256color",
                                                   "LANG": "C.UTF-8"})["Id"]
            stream = api.exec_start(exec_id, socket=True, tty=True)
            terminal = DockerTerminal(api, container.id, exec_id, token, stream=stream,
                                      errors=self._errors)
        try:
            terminal.resize(cols, rows)
        except DriverError:
            pass  # the shell may take a moment to start; the next resize sets it
        return terminal

    def _run(self, container: Any, argv: list[str], timeout: float,
             user: str = "") -> tuple[int, str]:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with self._errors(f"running {argv[0]} in {container.name}"):
                    outcome["result"] = container.exec_run(argv, user=user, demux=False)
            except DriverError as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=run, name=f"docker-exec-{container.name}",
                                  daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise DriverError(f"{argv[0]} in {container.name} still runs after {timeout} s")
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["result"]
        return int(result.exit_code or 0), (result.output or b"").decode("utf-8", "replace")

    def _run_with_input(self, container: Any, argv: list[str], data: bytes, timeout: float,
                        user: str = "") -> tuple[int, str]:
        """Run argv with `data` on its standard input (kept open: the command reads what
        it needs); return its exit code and output."""
        api = self._client.api
        deadline = time.monotonic() + timeout
        with self._errors(f"running {argv[0]} in {container.name}"):
            exec_id = api.exec_create(container.id, argv, stdin=True, stdout=True,
                                      stderr=True, user=user)["Id"]
            stream = api.exec_start(exec_id, socket=True)
            # unix: a SocketIO around the socket (the SDK's union type has no common API)
            sock: Any = getattr(stream, "_sock", stream)
            received = bytearray()
            try:
                sock.sendall(data)
                while chunk := _recv(sock, deadline):
                    received += chunk[:_OUTPUT_MAX - len(received)]
            except TimeoutError:
                raise DriverError(f"{argv[0]} in {container.name} still runs after "
                                  f"{timeout} s") from None
            finally:
                stream.close()
                sock.close()  # both: a SocketIO keeps its socket open until closed too
            state = api.exec_inspect(exec_id)
            while state.get("Running") and time.monotonic() < deadline:
                time.sleep(0.01)  # the output ended a moment before Docker noted the exit
                state = api.exec_inspect(exec_id)
        if state.get("Running") or state.get("ExitCode") is None:
            raise DriverError(f"{argv[0]} in {container.name} still runs after {timeout} s")
        return int(state["ExitCode"]), _demultiplex(bytes(received)).decode("utf-8",
                                                                             "replace")

    def close(self) -> None:
        with self._lock:
            client, self._docker = self._docker, None
        if client is not None:
            client.close()


def _recv(sock: Any, deadline: float) -> bytes:
    """What the socket has next (b"" at its end); TimeoutError after `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    sock.settimeout(left)
    return sock.recv(65536)


def _demultiplex(raw: bytes) -> bytes:
    """The payloads of Docker's multiplexed stream (8-byte frame headers: stream, size)."""
    payloads, at = [], 0
    while at + 8 <= len(raw):
        size = int.from_bytes(raw[at + 4:at + 8], "big")
        payloads.append(raw[at + 8:at + 8 + size])
        at += 8 + size
    return b"".join(payloads)


def _tls_config(options: dict[str, str]) -> docker.tls.TLSConfig | bool:
    ca, cert, key = (options.get(name) or None for name in ("ca_cert", "client_cert",
                                                              "client_key"))
    if not (ca or cert or key or options.get("tls") == "true"):
        return False
    if bool(cert) != bool(key):
        raise DriverError("client_cert and client_key go together", permanent=True)
    return docker.tls.TLSConfig(client_cert=(cert, key) if cert and key else None, ca_cert=ca,
                                verify=ca or True)


def _resources(limits: Limits) -> dict[str, int]:
    memory = limits.memory_mb * 2**20
    return {"nano_cpus": int(limits.vcpus * 1e9), "mem_limit": memory, "memswap_limit": memory}


def _limits_of(container: Any) -> Limits:
    """The limits a container has: CPU and memory from Docker, the disk as set or recorded."""
    host = container.attrs.get("HostConfig") or {}
    size = (host.get("StorageOpt") or {}).get("size", "")
    disk = size[:-1] if size.upper().endswith("G") else container.labels.get(DISK, "0")
    return Limits(vcpus=max(1, round((host.get("NanoCpus") or 0) / 1e9)),
                  memory_mb=(host.get("Memory") or 0) // 2**20,
                  disk_gb=int(disk) if disk.isdigit() else 0)


def _addresses(networks: dict) -> tuple[str, ...]:
    """IPv4 addresses (the default bridge's first), then global IPv6 ones."""
    names = sorted(networks, key=lambda name: (name != "bridge", name))
    ipv4 = [networks[name].get("IPAddress") for name in names]
    ipv6 = [networks[name].get("GlobalIPv6Address") for name in names]
    return tuple(address for address in ipv4 + ipv6
                 if address and not address.startswith(("127.", "169.254.", "fe80", "::1")))
