"""Archives of Incus instances (mixed into `IncusDriver`).

An archive is an Incus image tarball (metadata.yaml and rootfs/, the engine's own
compression). `export_archive` snapshots the instance (it keeps running), publishes the
snapshot as an image, streams the image's export out and removes the snapshot and the
image. `restore_archive` uploads the tarball as an image and rebuilds the instance from
it (stopped meanwhile: a rebuild needs that), which keeps its name, config, MAC address
and so its address; `create_from_archive` creates from the uploaded image. The uploaded
image is removed afterwards, so the engine keeps nothing of an archive.

Temporary objects are named so a crash's leftovers can be found: snapshots
`appliance-export-<hex>`, images with the property `appliance.transfer`. Final backups
taken before archives moved to the appliance's store are images aliased
`appliance-archive/<name>` (deleted with `delete_archive`; never offered as images).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlencode

from appliance.drivers.base import DriverError, InstanceSpec, Sink
from appliance.drivers.incus.api import (
    ARCHIVE_PREFIX,
    KEYS_CONFIG,
    USER_CONFIG,
    NotFound,
    quote_name,
)

EXPORT_SNAPSHOT = "appliance-export-"
TRANSFER = "appliance.transfer"  # image property: "export:<ref>" or "import:<ref>"
_SAME_FINGERPRINT = "same fingerprint already exists"


class IncusCopies:
    """Archives: export, restore, create from one (needs IncusDriver's helpers)."""

    if TYPE_CHECKING:  # IncusDriver's, declared for the type checker
        _create_timeout: float

        def _call(self, method: str, path: str, *, what: str = "", wait: float | None = None,
                  **kwargs: Any) -> Any: ...
        def _send(self, method: str, path: str, *, timeout: float | None = None,
                  raw: bool = False, into: Sink | None = None, **kwargs: Any) -> Any: ...
        def _wait(self, operation: str, timeout: float, what: str) -> dict: ...
        def _instance(self, ref: str) -> dict: ...
        def _known_power(self, ref: str) -> str: ...
        def _install_ssh_keys(self, ref: str, user: str, keys: tuple[str, ...]) -> None: ...
        def create(self, spec: InstanceSpec,
                   started: Callable[[], None] | None = None) -> str: ...
        def start(self, ref: str) -> None: ...
        def stop(self, ref: str, graceful: bool = True, timeout: int = 30) -> None: ...

    def export_archive(self, ref: str, out: Sink) -> None:
        self._known_power(ref)
        self._remove_transfers(ref)  # what an interrupted export of it left
        snapshot = EXPORT_SNAPSHOT + uuid.uuid4().hex[:12]
        self._call("POST", f"/1.0/instances/{quote_name(ref)}/snapshots",
                   json={"name": snapshot}, wait=self._create_timeout,
                   what=f"snapshotting {ref}")
        try:
            published = self._call(
                "POST", "/1.0/images", wait=self._create_timeout, what=f"publishing {ref}",
                json={"source": {"type": "snapshot", "name": f"{ref}/{snapshot}"},
                      "properties": {TRANSFER: f"export:{ref}"}})
        finally:
            self._delete_snapshot(ref, snapshot)
        fingerprint = published["fingerprint"]
        try:
            self._send("GET", f"/1.0/images/{fingerprint}/export", into=out,
                       timeout=self._create_timeout)
        finally:
            self._delete_image(fingerprint)

    def restore_archive(self, ref: str, archive: BinaryIO) -> None:
        power = self._known_power(ref)
        config = self._instance(ref).get("config") or {}
        self._remove_transfers(ref)
        fingerprint, ours = self._upload(archive, ref)
        try:
            self.stop(ref, graceful=False)
            self._call("POST", f"/1.0/instances/{quote_name(ref)}/rebuild",
                       json={"source": {"type": "image", "fingerprint": fingerprint}},
                       wait=self._create_timeout, what=f"restoring {ref}")
        finally:
            if ours:
                self._delete_image(fingerprint)
        keys = tuple(line for line in config.get(KEYS_CONFIG, "").splitlines() if line)
        self._install_ssh_keys(ref, config.get(USER_CONFIG) or "root", keys)
        if power == "running":
            self.start(ref)

    def create_from_archive(self, spec: InstanceSpec, archive: BinaryIO,
                            started: Callable[[], None] | None = None) -> str:
        self._remove_transfers(spec.name)
        fingerprint, ours = self._upload(archive, spec.name)
        try:
            return self.create(replace(spec, image=fingerprint), started)
        finally:
            if ours:
                self._delete_image(fingerprint)

    def remove_leftovers(self) -> list[str]:
        removed = []
        for image in self._call("GET", "/1.0/images", params={"recursion": 1}) or []:
            if TRANSFER in (image.get("properties") or {}):
                self._delete_image(image["fingerprint"])
                removed.append(f"image {image['fingerprint'][:12]}")
        for instance in self._call("GET", "/1.0/instances", params={"recursion": 1}) or []:
            name = instance["name"]
            for url in self._call("GET", f"/1.0/instances/{quote_name(name)}/snapshots") or []:
                snapshot = url.rstrip("/").rpartition("/")[2]
                if snapshot.startswith(EXPORT_SNAPSHOT):
                    self._delete_snapshot(name, snapshot)
                    removed.append(f"snapshot {name}/{snapshot}")
        return removed

    def delete_archive(self, archive_ref: str) -> None:
        if not archive_ref.startswith(ARCHIVE_PREFIX):
            return
        try:
            alias = self._call("GET", f"/1.0/images/aliases/{quote_name(archive_ref)}")
            self._call("DELETE", f"/1.0/images/{alias['target']}", wait=self._create_timeout,
                       what=f"deleting {archive_ref}")
        except NotFound:
            pass

    # -- helpers -----------------------------------------------------------------------

    def _upload(self, archive: BinaryIO, ref: str) -> tuple[str, bool]:
        """Import the tarball as an image marked as ours; (its fingerprint, whether this
        upload made it - an image with the same fingerprint may exist already)."""
        headers = {"Content-Type": "application/octet-stream",
                   "X-Incus-properties": urlencode({TRANSFER: f"import:{ref}"})}
        body = self._send("POST", "/1.0/images", data=archive, headers=headers,
                          timeout=self._create_timeout)
        what = f"importing an archive for {ref}"
        operation = self._wait(body["operation"], self._create_timeout, what)
        result = operation.get("metadata") or {}
        if operation.get("status") == "Success":
            return result["fingerprint"], True
        message = operation.get("err") or "failed"
        if _SAME_FINGERPRINT in message and result.get("fingerprint"):
            existing = self._call("GET", f"/1.0/images/{result['fingerprint']}")
            # Ours (left by an interrupted run) goes after use; someone else's stays.
            return result["fingerprint"], TRANSFER in (existing.get("properties") or {})
        raise DriverError(f"{what}: {message}", permanent=True)

    def _remove_transfers(self, ref: str) -> None:
        for image in self._call("GET", "/1.0/images", params={"recursion": 1}) or []:
            if (image.get("properties") or {}).get(TRANSFER) in (f"export:{ref}",
                                                                 f"import:{ref}"):
                self._delete_image(image["fingerprint"])
        try:
            urls = self._call("GET", f"/1.0/instances/{quote_name(ref)}/snapshots") or []
        except NotFound:
            urls = []
        for url in urls:
            snapshot = url.rstrip("/").rpartition("/")[2]
            if snapshot.startswith(EXPORT_SNAPSHOT):
                self._delete_snapshot(ref, snapshot)

    def _delete_snapshot(self, ref: str, snapshot: str) -> None:
        try:
            self._call("DELETE",
                       f"/1.0/instances/{quote_name(ref)}/snapshots/{quote_name(snapshot)}",
                       wait=self._create_timeout, what=f"deleting the snapshot {snapshot}")
        except NotFound:
            pass

    def _delete_image(self, fingerprint: str) -> None:
        try:
            self._call("DELETE", f"/1.0/images/{fingerprint}", wait=self._create_timeout,
                       what=f"deleting the image {fingerprint[:12]}")
        except NotFound:
            pass
