"""What every part of the Incus driver shares about Incus's REST API."""

from __future__ import annotations

from urllib.parse import quote

from appliance.drivers.base import DriverError

ARCHIVE_PREFIX = "appliance-archive/"  # engine archives of final backups before 0014
# What the driver keeps in an instance's config so a rebuild or restore can redo it.
KEYS_CONFIG = "user.appliance.ssh-keys"
USER_CONFIG = "user.appliance.user"


class NotFound(DriverError):
    """The engine answered 404: permanent, and the callers that expect it catch it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


def quote_name(name: str) -> str:
    """A name as one segment of an API path."""
    return quote(name, safe="")
