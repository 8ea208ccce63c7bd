"""Accounts, SSH keys and passwords inside a Docker container (mixed into `DockerDriver`)."""

from __future__ import annotations

import io
import tarfile
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import docker.errors

from appliance.drivers.base import DriverError


class DockerFiles:
    """Accounts, SSH keys and passwords inside a container (needs DockerDriver's helpers)."""

    if TYPE_CHECKING:  # DockerDriver's, declared for the type checker
        def _errors(self, what: str) -> AbstractContextManager[None]: ...
        def _get(self, ref: str) -> Any: ...
        def _run_with_input(self, container: Any, argv: list[str], data: bytes,
                            timeout: float, user: str = "") -> tuple[int, str]: ...

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
            if not container.put_archive(directory, tar_of(entries)):
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


def tar_of(entries: list[tuple]) -> bytes:
    """A tar archive of (name, content or None for a directory, mode, uid, gid)."""
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
