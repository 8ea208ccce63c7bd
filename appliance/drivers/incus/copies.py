"""Incus driver features beyond the lifecycle (mixed into `IncusDriver`): backups are
snapshots (removed with the instance), templates and archives are images published from
a snapshot - templates aliased `appliance-template/<name>` and offered as images, archives
(a copy kept when an instance is deleted with a final backup) aliased
`appliance-archive/<name>` and never offered.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from appliance.drivers.base import DriverError
from appliance.drivers.incus.api import ARCHIVE_PREFIX, TEMPLATE_PREFIX, NotFound, quote_name


class IncusCopies:
    """Snapshots, restores, templates and archives (needs IncusDriver's helpers)."""

    if TYPE_CHECKING:  # IncusDriver's, declared for the type checker
        _create_timeout: float

        def _call(self, method: str, path: str, *, what: str = "", wait: float | None = None,
                  **kwargs: Any) -> Any: ...

    def snapshot(self, ref: str, name: str) -> str:
        self._call("POST", f"/1.0/instances/{quote_name(ref)}/snapshots", json={"name": name},
                   wait=self._create_timeout, what=f"snapshotting {ref}")
        return f"{ref}/{name}"

    def restore(self, ref: str, backup_ref: str) -> None:
        name = backup_ref.rpartition("/")[2]
        try:
            self._call("GET", f"/1.0/instances/{quote_name(ref)}/snapshots/{quote_name(name)}")
        except NotFound:
            raise DriverError(f"no backup {backup_ref}", permanent=True) from None
        self._call("PUT", f"/1.0/instances/{quote_name(ref)}", json={"restore": name},
                   wait=self._create_timeout, what=f"restoring {backup_ref}")

    def delete_backup(self, ref: str, backup_ref: str) -> None:
        name = backup_ref.rpartition("/")[2]
        try:
            self._call("DELETE", f"/1.0/instances/{quote_name(ref)}/snapshots/{quote_name(name)}",
                       wait=self._create_timeout, what=f"deleting {backup_ref}")
        except NotFound:
            pass

    def export_template(self, ref: str, name: str) -> str:
        """Publish a snapshot of the instance (it keeps running) as an image aliased
        `appliance-template/<name>`; exporting a name again moves the alias."""
        return self._publish(ref, TEMPLATE_PREFIX + name, f"Template {name} (from {ref})")

    def archive(self, ref: str, name: str) -> str:
        """Publish it as an image aliased `appliance-archive/<name>`, which `images()`
        leaves out."""
        return self._publish(ref, ARCHIVE_PREFIX + name, f"Archive {name} (of {ref})")

    def delete_archive(self, archive_ref: str) -> None:
        if not archive_ref.startswith(ARCHIVE_PREFIX):
            return
        try:
            alias = self._call("GET", f"/1.0/images/aliases/{quote_name(archive_ref)}")
            self._call("DELETE", f"/1.0/images/{alias['target']}", wait=self._create_timeout,
                       what=f"deleting {archive_ref}")
        except NotFound:
            pass

    def _publish(self, ref: str, alias: str, description: str) -> str:
        snapshot = f"appliance-export-{uuid.uuid4().hex[:8]}"
        self.snapshot(ref, snapshot)
        try:
            published = self._call(
                "POST", "/1.0/images", wait=self._create_timeout, what=f"publishing {ref}",
                json={"source": {"type": "snapshot", "name": f"{ref}/{snapshot}"},
                      "properties": {"description": description}})
        finally:
            self.delete_backup(ref, snapshot)
        fingerprint = published["fingerprint"]
        try:
            old = self._call("GET", f"/1.0/images/aliases/{quote_name(alias)}")
        except NotFound:
            self._call("POST", "/1.0/images/aliases",
                       json={"name": alias, "target": fingerprint, "description": description})
            return alias
        self._call("PUT", f"/1.0/images/aliases/{quote_name(alias)}",
                   json={"target": fingerprint, "description": description})
        if old.get("target") and old["target"] != fingerprint:
            try:
                self._call("DELETE", f"/1.0/images/{old['target']}")
            except DriverError:
                pass  # still used by another alias: it stays
        return alias
