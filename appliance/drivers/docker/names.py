"""The names the Docker driver gives what it owns, and the labels it marks them with.

Image repositories: `appliance-backup/<ref>:export-<hex>` (a commit being exported to an
archive, removed with it or with the instance), `appliance-restored/<ref>` (the image of
an instance restored or created from an archive, which its container uses; removed with
the instance) and `appliance-archive/<name>` (an engine archive of a final backup taken
before archives moved to the appliance's store; never offered as an image).
"""

from __future__ import annotations

from typing import Any

MANAGED, INSTANCE = "appliance.managed", "appliance.instance"
BACKUPS, RESTORED = "appliance-backup", "appliance-restored"
ARCHIVES = "appliance-archive"


def networks_of(container: Any) -> dict:
    """The networks a container is attached to, by name, as Docker inspects them."""
    return (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
