"""Docker driver features beyond the lifecycle (mixed into `DockerDriver`): files,
accounts and passwords inside a container; backups, templates and archives as committed
images; private networks as user-defined bridges.

Image repositories the driver owns: `appliance-backup/<ref>:<name>` (backups, removed
with the instance), `appliance-restored/<ref>` (the image of a restored instance, which
the recreated container uses), `appliance-template/<name>` (templates, offered as images)
and `appliance-archive/<name>` (a copy kept when an instance is deleted with a final
backup; never offered as an image).
Templates carry the instance's environment. Private networks are internal bridges (a
rebuild reattaches the instance, with new addresses on them).
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from typing import Any

import docker
import docker.errors
import docker.types

from appliance.drivers.base import DriverError

MANAGED, INSTANCE = "appliance.managed", "appliance.instance"
BACKUPS, RESTORED = "appliance-backup", "appliance-restored"
TEMPLATES, ARCHIVES = "appliance-template", "appliance-archive"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


class DockerFiles:
    """Accounts, SSH keys and passwords inside a container (needs DockerDriver's helpers)."""

    def _account(self, container: Any, user: str) -> tuple[int, int, str]:
        """(uid, gid, home) of `user`, read from the container's /etc/passwd."""
        passwd = ""
        with self._errors(f"reading /etc/passwd of {container.name}"):
            try:
                chunks, _ = container.get_archive("/etc/passwd")
                with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
                    member = tar.next()
                    handle = tar.extractfile(member) if member is not None else None
                    passwd = handle.read().decode("utf-8", "replace") if handle else ""
            except docker.errors.NotFound:
                pass
        for line in passwd.splitlines():
            fields = line.split(":")
            if len(fields) >= 6 and fields[0] == user and fields[2].isdigit():
                return int(fields[2]), int(fields[3] or 0), fields[5] or "/"
        if user == "root":
            return 0, 0, "/root"
        raise DriverError(f"the image has no user {user}", permanent=True)

    def _put(self, container: Any, directory: str, entries: list[tuple]) -> None:
        """Write (name, content or None for a directory, mode, uid, gid) under `directory`."""
        with self._errors(f"writing into {container.name}"):
            if not container.put_archive(directory, _tar(entries)):
                raise DriverError(f"Docker did not write into {directory} of {container.name}")

    def _install_ssh_keys(self, container: Any, user: str, keys: tuple[str, ...]) -> None:
        if not keys:
            return
        uid, gid, home = self._account(container, user)
        content = "".join(key.strip() + "\n" for key in keys).encode()
        self._put(container, home, [(".ssh", None, 0o700, uid, gid),
                                    (".ssh/authorized_keys", content, 0o600, uid, gid)])

    def set_password(self, ref: str, user: str, password: str) -> None:
        self._apply_password(self._get(ref), user, password)

    def _apply_password(self, container: Any, user: str, password: str) -> None:
        """chpasswd in the running container, fed `user:password` on its standard input:
        the password goes through no command line, no file and none of the records Docker
        keeps of an exec (docker inspect shows an exec's command line). The shell reads one
        line, so the end of the input need not be signalled (which TLS connections make
        awkward)."""
        if "\n" in password or not password:
            raise DriverError("a password is one non-empty line", permanent=True)
        code, output = self._run_with_input(
            container, ["sh", "-c", 'IFS= read -r entry && printf "%s\\n" "$entry" | chpasswd'],
            f"{user}:{password}\n".encode(), 30, user="0")
        if code in (126, 127):
            raise DriverError("the image has no chpasswd, so it cannot take a password",
                              permanent=True)
        if code != 0:
            raise DriverError(f"chpasswd failed ({code}): {output.strip()}", permanent=True)


class DockerCopies:
    """Backups, restores, templates and archives (needs DockerDriver's helpers)."""

    def snapshot(self, ref: str, name: str) -> str:
        """Commit the container (paused meanwhile) to `appliance-backup/<ref>:<name>`."""
        if not _TAG.fullmatch(name):
            raise DriverError(f"{name!r} cannot name a Docker backup", permanent=True)
        container = self._get(ref)
        repository = f"{BACKUPS}/{ref.lower()}"
        previous = self._commit(container, repository, name)
        self._remove_image(previous, untagged_only=True)
        return f"{repository}:{name}"

    def _commit(self, container: Any, repository: str, tag: str) -> str | None:
        """Commit (pausing the container meanwhile); return the id of the image the tag
        named before, which the caller removes once nothing uses it."""
        previous = self._image_id(f"{repository}:{tag}")
        with self._errors(f"committing {container.name}"):
            # Containers anyone makes from the image must not pass for the instance.
            image = container.commit(repository=repository, tag=tag, pause=True,
                                     changes=[f'LABEL {MANAGED}="" {INSTANCE}=""'])
        return previous if previous != image.id else None

    def _image_id(self, image: str) -> str | None:
        with self._errors(f"looking up the image {image}"):
            try:
                return self._client.images.get(image).id
            except docker.errors.NotFound:
                return None

    def restore(self, ref: str, backup_ref: str) -> None:
        """Recreate the instance from the backup (it is started)."""
        repository = f"{BACKUPS}/{ref.lower()}"
        if not backup_ref.startswith(repository + ":"):
            raise DriverError(f"no backup {backup_ref} of {ref}", permanent=True)
        backup = self._require_image(backup_ref, "backup")
        self._get(ref)
        restored = f"{RESTORED}/{ref.lower()}"
        previous = self._image_id(f"{restored}:latest")
        with self._errors(f"restoring {backup_ref}"):
            backup.tag(restored, "latest")  # the container's image outlives the backup
        self._recreate(ref, f"{restored}:latest")
        self._remove_image(previous if previous != backup.id else None, untagged_only=True)

    def delete_backup(self, ref: str, backup_ref: str) -> None:
        if backup_ref.startswith(f"{BACKUPS}/{ref.lower()}:"):
            self._remove_image(backup_ref)

    def export_template(self, ref: str, name: str) -> str:
        """Commit the instance (it keeps running) as `appliance-template/<name>`; exporting
        a name again moves it. The template carries the instance's environment."""
        if not _REPOSITORY.fullmatch(name.lower()):
            raise DriverError(f"{name!r} cannot name a Docker image", permanent=True)
        repository = f"{TEMPLATES}/{name.lower()}"
        previous = self._commit(self._get(ref), repository, "latest")
        self._remove_image(previous, untagged_only=True)
        return repository

    def archive(self, ref: str, name: str) -> str:
        """Commit the instance (paused meanwhile) to `appliance-archive/<name>`: an image
        that outlives the instance and that `images()` does not offer."""
        if not _REPOSITORY.fullmatch(name.lower()):
            raise DriverError(f"{name!r} cannot name a Docker image", permanent=True)
        repository = f"{ARCHIVES}/{name.lower()}"
        previous = self._commit(self._get(ref), repository, "latest")
        self._remove_image(previous, untagged_only=True)
        return repository

    def delete_archive(self, archive_ref: str) -> None:
        if archive_ref.startswith(ARCHIVES + "/"):
            self._remove_image(archive_ref + ":latest")



class DockerNetworks:
    """Private networks (needs DockerDriver's helpers)."""

    def create_network(self, name: str, cidr: str) -> str:
        """An internal user-defined bridge `name` on `cidr` (the default bridge stays the
        way out); its ref is the name. Creating it again returns it as it is."""
        if self._network(name, missing_ok=True) is not None:
            return name
        ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=cidr)])
        with self._errors(f"creating the network {name}"):
            self._client.networks.create(name, driver="bridge", ipam=ipam, internal=True,
                                         check_duplicate=True, labels={MANAGED: "true"})
        return name

    def _network(self, network_ref: str, missing_ok: bool = False) -> Any:
        with self._errors(f"looking up the network {network_ref}"):
            try:
                network = self._client.networks.get(network_ref)
            except docker.errors.NotFound:
                network = None
        if network is None or network.name != network_ref or (
                network.attrs.get("Labels") or {}).get(MANAGED) != "true":
            if missing_ok:
                return None
            raise DriverError(f"no network {network_ref}", permanent=True)
        return network

    def delete_network(self, network_ref: str) -> None:
        """Remove the network; a permanent error while instances are attached."""
        network = self._network(network_ref, missing_ok=True)
        if network is not None:
            with self._errors(f"deleting the network {network_ref}"):
                network.remove()

    def attach(self, ref: str, network_ref: str) -> None:
        network, container = self._network(network_ref), self._get(ref)
        if network_ref not in _networks(container):
            with self._errors(f"attaching {ref} to {network_ref}"):
                network.connect(container)

    def detach(self, ref: str, network_ref: str) -> None:
        container = self._get(ref)
        if network_ref in _networks(container):
            with self._errors(f"detaching {ref} from {network_ref}"):
                self._network(network_ref).disconnect(container)


def _networks(container: Any) -> dict:
    return (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}


def _tar(entries: list[tuple]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, int(time.time())
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()
