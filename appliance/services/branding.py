"""The operator's branding as pages, mails and invoices show it: site name, logo, favicon,
accent colour, footer text and support URL.

The texts and the colour are run-time settings (services/settings.py: SITE_NAME,
BRANDING_ACCENT_COLOR, BRANDING_FOOTER_TEXT, BRANDING_SUPPORT_URL). The logo and the
favicon are images an administrator uploaded (services/ops/branding.py checks them: PNG or
JPEG, at most IMAGE_MAX_BYTES; SVG is refused), kept in the database (the `setting` row
`branding.logo` / `branding.favicon`: content type and sha256, read for every page; the
bytes in base64 in `branding.logo.data`, read only to serve the image), so an appliance
backup holds them and every process serves the same ones. Their URLs carry
the first characters of the sha256 (`/branding/logo?v=...`): a new image is a new URL,
so the old one can be cached for good.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from appliance import config
from appliance.models import Setting
from appliance.services import settings

IMAGES = ("logo", "favicon")
IMAGE_MAX_BYTES = 512 * 1024
DEFAULT_ACCENT = "#2f5bea"


@dataclass(frozen=True)
class StoredImage:
    kind: str  # logo | favicon
    content_type: str  # image/png | image/jpeg
    sha256: str

    @property
    def data(self) -> bytes:
        """The image's bytes (read from the database when asked for)."""
        row = Setting.get_or_none(Setting.key == data_key(self.kind))
        return base64.b64decode(json.loads(row.value)) if row is not None else b""

    @property
    def version(self) -> str:
        return self.sha256[:12]

    @property
    def url(self) -> str:
        return f"/branding/{self.kind}?v={self.version}"

    @property
    def extension(self) -> str:
        return "png" if self.content_type == "image/png" else "jpg"


@dataclass(frozen=True)
class Branding:
    site_name: str
    accent_color: str  # "" for the built-in colour
    footer_text: str
    support_url: str
    logo: StoredImage | None
    favicon: StoredImage | None

    @property
    def logo_url(self) -> str | None:
        return self.logo.url if self.logo else None

    @property
    def favicon_url(self) -> str | None:
        return self.favicon.url if self.favicon else None

    @property
    def theme_url(self) -> str | None:
        """The stylesheet that sets the accent colour (None: the built-in one)."""
        return f"/branding/theme.css?v={self.accent_color[1:]}" if self.accent_color else None


def image_key(kind: str) -> str:
    return f"branding.{kind}"


def data_key(kind: str) -> str:
    return f"branding.{kind}.data"


def image(kind: str) -> StoredImage | None:
    """The uploaded logo or favicon, None when there is none."""
    row = Setting.get_or_none(Setting.key == image_key(kind))
    if row is None:
        return None
    stored = json.loads(row.value)
    return StoredImage(kind, stored["content_type"], stored["sha256"])


def current(config_values: dict[str, Any] | None = None) -> Branding:
    values = config_values if config_values is not None else config.active()
    return Branding(
        site_name=settings.get(values, "SITE_NAME"),
        accent_color=settings.get(values, "BRANDING_ACCENT_COLOR"),
        footer_text=settings.get(values, "BRANDING_FOOTER_TEXT"),
        support_url=settings.get(values, "BRANDING_SUPPORT_URL"),
        logo=image("logo"), favicon=image("favicon"))


def theme_css(color: str) -> str:
    """The stylesheet of an accent colour (#rrggbb): the accent, a darker one for
    hover and a pale one for backgrounds, in light and dark mode."""
    red, green, blue = (int(color[i:i + 2], 16) for i in (1, 3, 5))

    def mix(towards: int, share: float) -> str:
        return "#" + "".join(f"{round(c + (towards - c) * share):02x}"
                             for c in (red, green, blue))

    return (f":root {{ --accent: {color}; --accent-strong: {mix(0, .25)}; "
            f"--accent-soft: {mix(255, .88)}; }}\n"
            f"@media (prefers-color-scheme: dark) {{ :root {{ --accent: {mix(255, .3)}; "
            f"--accent-strong: {mix(255, .45)}; --accent-soft: {mix(0, .75)}; }} }}\n")


def public_config(config_values: dict[str, Any]) -> dict[str, Any]:
    """What anyone may know before signing in: the site's settings and its branding."""
    found = current(config_values)
    return {**settings.public_config(config_values),
            "accent_color": found.accent_color, "footer_text": found.footer_text,
            "support_url": found.support_url, "logo_url": found.logo_url,
            "favicon_url": found.favicon_url, "theme_url": found.theme_url}
