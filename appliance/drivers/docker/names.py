"""The names the Docker driver gives what it owns, and the labels it marks them with.

Image repositories: `appliance-backup/<ref>:<name>` (backups, removed with the instance),
`appliance-restored/<ref>` (the image of a restored instance, which the recreated
container uses), `appliance-template/<name>` (templates, offered as images) and
`appliance-archive/<name>` (a copy kept when an instance is deleted with a final backup;
never offered as an image).
"""

from __future__ import annotations

import re
from typing import Any

MANAGED, INSTANCE = "appliance.managed", "appliance.instance"
BACKUPS, RESTORED = "appliance-backup", "appliance-restored"
TEMPLATES, ARCHIVES = "appliance-template", "appliance-archive"
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")


def networks_of(container: Any) -> dict:
    """The networks a container is attached to, by name, as Docker inspects them."""
    return (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
