"""Backups, restores, templates and archives of Docker containers as committed images
(mixed into `DockerDriver`). Templates carry the instance's environment.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from appliance.drivers.base import DriverError, Limits
from appliance.drivers.docker.names import (
    ARCHIVES,
    BACKUPS,
    INSTANCE,
    MANAGED,
    REPOSITORY,
    RESTORED,
    TAG,
    TEMPLATES,
)


class DockerCopies:
    """Backups, restores, templates and archives (needs DockerDriver's helpers)."""

    if TYPE_CHECKING:  # DockerDriver's, declared for the type checker
        @property
        def _client(self) -> docker.DockerClient: ...
        def _errors(self, what: str) -> AbstractContextManager[None]: ...
        def _get(self, ref: str) -> Any: ...
        def _require_image(self, image: str, what: str = "image") -> Any: ...
        def _remove_image(self, image: str | None, untagged_only: bool = False) -> None: ...
        def _recreate(self, ref: str, image: str, limits: Limits | None = None,
                      start: bool = True) -> None: ...

    def snapshot(self, ref: str, name: str) -> str:
        """Commit the container (paused meanwhile) to `appliance-backup/<ref>:<name>`."""
        if not TAG.fullmatch(name):
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
        if not REPOSITORY.fullmatch(name.lower()):
            raise DriverError(f"{name!r} cannot name a Docker image", permanent=True)
        repository = f"{TEMPLATES}/{name.lower()}"
        previous = self._commit(self._get(ref), repository, "latest")
        self._remove_image(previous, untagged_only=True)
        return repository

    def archive(self, ref: str, name: str) -> str:
        """Commit the instance (paused meanwhile) to `appliance-archive/<name>`: an image
        that outlives the instance and that `images()` does not offer."""
        if not REPOSITORY.fullmatch(name.lower()):
            raise DriverError(f"{name!r} cannot name a Docker image", permanent=True)
        repository = f"{ARCHIVES}/{name.lower()}"
        previous = self._commit(self._get(ref), repository, "latest")
        self._remove_image(previous, untagged_only=True)
        return repository

    def delete_archive(self, archive_ref: str) -> None:
        if archive_ref.startswith(ARCHIVES + "/"):
            self._remove_image(archive_ref + ":latest")
