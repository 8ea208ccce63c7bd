"""Archives of Docker containers (mixed into `DockerDriver`).

An archive is a `docker save` tarball of a commit of the container: every layer down to
the base image's, so it loads on any Docker. `export_archive` commits the container
(paused meanwhile, so the filesystem is consistent) under `appliance-backup/<ref>:export-
<hex>`, streams `docker save` of the commit out and untags it. `restore_archive` loads
the tarball, tags it `appliance-restored/<ref>` and recreates the container from it (the
new container gets the old one's name, labels, keys, environment and limits; see
`DockerDriver._recreate`); `create_from_archive` tags it `appliance-restored/<name>` and
creates from it. Deleting the instance removes those tags, so the engine keeps nothing
of an archive. Volumes the image declares are not part of a commit, so not of an archive.

Commits are labelled `appliance.managed=""`: a load interrupted before its tag leaves an
untagged image with that label, which `remove_leftovers` removes. Final backups taken
before archives moved to the appliance's store are images `appliance-archive/<name>`
(deleted with `delete_archive`; never offered as images).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, BinaryIO

import docker
import docker.errors

from appliance.drivers.base import DriverError, InstanceSpec, Limits, Sink
from appliance.drivers.docker.names import ARCHIVES, BACKUPS, INSTANCE, MANAGED, RESTORED

EXPORT_TAG = "export-"
SAVE_CHUNK = 1 << 20  # bytes a `docker save` stream is read by


class DockerCopies:
    """Archives: export, restore, create from one (needs DockerDriver's helpers)."""

    if TYPE_CHECKING:  # DockerDriver's, declared for the type checker
        @property
        def _client(self) -> docker.DockerClient: ...
        def _errors(self, what: str) -> AbstractContextManager[None]: ...
        def _get(self, ref: str) -> Any: ...
        def _is_on(self, container: Any) -> bool: ...
        def _remove_image(self, image: str | None, untagged_only: bool = False) -> None: ...
        def _recreate(self, ref: str, image: str, limits: Limits | None = None,
                      start: bool = True) -> None: ...
        def create(self, spec: InstanceSpec,
                   started: Callable[[], None] | None = None) -> str: ...

    def export_archive(self, ref: str, out: Sink) -> None:
        container = self._get(ref)
        repository = f"{BACKUPS}/{ref.lower()}"
        self._remove_exports(repository)  # what an interrupted export of it left
        tag = EXPORT_TAG + uuid.uuid4().hex[:12]
        self._commit(container, repository, tag)
        try:
            with self._errors(f"saving {ref}"):
                image = self._client.images.get(f"{repository}:{tag}")
                # By id (named=False): loading it makes an untagged image, tagged after.
                for chunk in image.save(chunk_size=SAVE_CHUNK, named=False):
                    out.write(chunk)
        finally:
            self._remove_image(f"{repository}:{tag}")

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

    def restore_archive(self, ref: str, archive: BinaryIO) -> None:
        container = self._get(ref)
        restored = f"{RESTORED}/{ref.lower()}"
        previous = self._image_id(f"{restored}:latest")
        loaded = self._load(archive, restored)
        self._recreate(ref, f"{restored}:latest", start=self._is_on(container))
        self._remove_image(previous if previous != loaded else None, untagged_only=True)

    def create_from_archive(self, spec: InstanceSpec, archive: BinaryIO,
                            started: Callable[[], None] | None = None) -> str:
        restored = f"{RESTORED}/{spec.name.lower()}"
        self._load(archive, restored)
        try:
            return self.create(replace(spec, image=f"{restored}:latest"), started)
        except DriverError:
            self._remove_image(f"{restored}:latest")
            raise

    def _load(self, archive: BinaryIO, repository: str) -> str:
        """`docker load` the archive and tag it `repository:latest`; return its id."""
        with self._errors("loading an archive"):
            try:
                images = self._client.images.load(archive)
            except docker.errors.ImageLoadError as exc:
                raise DriverError(f"not an archive Docker can load: {exc}",
                                  permanent=True) from exc
            if len(images) != 1:
                raise DriverError(f"an archive holds one image, this one {len(images)}",
                                  permanent=True)
            images[0].tag(repository, "latest")
        return str(images[0].id)

    def remove_leftovers(self) -> list[str]:
        removed = []
        with self._errors("listing images"):
            tagged = self._client.images.list(filters={"reference": f"{BACKUPS}/*"})
            untagged = self._client.images.list(filters={"dangling": True, "label": MANAGED})
        for image in tagged:
            for tag in image.tags:
                if tag.rpartition(":")[2].startswith(EXPORT_TAG):
                    self._remove_image(tag)
                    removed.append(tag)
        for image in untagged:  # a load interrupted before its tag (in use: it stays)
            self._remove_image(str(image.id))
            if self._image_id(str(image.id)) is None:
                removed.append(str(image.short_id))
        return removed

    def _remove_exports(self, repository: str) -> None:
        with self._errors("listing images"):
            found = self._client.images.list(name=repository)
        for image in found:
            for tag in image.tags:
                if tag.startswith(f"{repository}:{EXPORT_TAG}"):
                    self._remove_image(tag)

    def delete_archive(self, archive_ref: str) -> None:
        if archive_ref.startswith(ARCHIVES + "/"):
            self._remove_image(archive_ref + ":latest")
