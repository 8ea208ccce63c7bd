"""Changing the branding (`/admin/settings/branding`): its texts and colour, and the logo
and favicon an administrator uploads. Administrators only (403 `admin_only`).

An image must be a PNG or a JPEG of at most IMAGE_MAX_BYTES and IMAGE_MAX_SIDE pixels a
side; Pillow opens and checks it. SVG is refused (400 `svg_refused`): an SVG is a
document that can carry scripts and links, and a sanitiser that misses one trick turns
the logo on every page into a script. Each change is audited (`branding.changed`,
`branding.image_set`, `branding.image_removed`); services/branding.py is how pages,
mails and invoices read it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import warnings
from collections.abc import Mapping

from PIL import Image, UnidentifiedImageError

from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import Setting
from appliance.services import audit, branding, clock
from appliance.services.accounts.admin import require_admin
from appliance.services.ops import site_settings
from appliance.services.principal import Principal

IMAGE_MAX_SIDE = 4096
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}


def get(principal: Principal) -> branding.Branding:
    require_admin(principal)
    return branding.current()


def texts(principal: Principal) -> list[site_settings.State]:
    """The texts and the colour with where each comes from (pinned ones read-only)."""
    require_admin(principal)
    return [site_settings.state(name) for name in site_settings.BRANDING_NAMES]


def change(principal: Principal, values: Mapping[str, object]) -> branding.Branding:
    """Change the site name, accent colour, footer text or support URL (name -> value;
    None puts the default back); as site_settings.change, audited there."""
    site_settings.change(principal, dict(values), site_settings.BRANDING_NAMES)
    return branding.current()


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<?xml", b"<svg", b"<!doctype svg", b"<!--")) or b"<svg" in head


def check_image(kind: str, data: bytes) -> str:
    """The content type of an acceptable image; 400 (field `kind`) otherwise."""
    if kind not in branding.IMAGES:
        raise InvalidRequest("The image is a logo or a favicon.", field="kind")
    if not data:
        raise InvalidRequest(f"Choose an image file for the {kind}.", field=kind)
    if len(data) > branding.IMAGE_MAX_BYTES:
        raise InvalidRequest(f"The {kind} is {len(data) // 1024} KB; at most "
                             f"{branding.IMAGE_MAX_BYTES // 1024} KB is accepted.", field=kind)
    if _looks_like_svg(data):
        raise InvalidRequest("SVG images are refused: an SVG can carry scripts. Upload a "
                             "PNG or a JPEG.", field=kind, code="svg_refused")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                found, size = opened.format, opened.size
                opened.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise InvalidRequest(f"The {kind} is not a PNG or JPEG image that can be read.",
                             field=kind) from None
    if found not in FORMATS:
        raise InvalidRequest(f"The {kind} is a {found} image; upload a PNG or a JPEG.",
                             field=kind)
    if max(size) > IMAGE_MAX_SIDE:
        raise InvalidRequest(f"The {kind} is {size[0]} x {size[1]} pixels; at most "
                             f"{IMAGE_MAX_SIDE} a side.", field=kind)
    return FORMATS[found]


def set_image(principal: Principal, kind: str, data: bytes) -> branding.Branding:
    """Store an uploaded logo or favicon (replacing the one before)."""
    require_admin(principal)
    content_type = check_image(kind, data)
    digest = hashlib.sha256(data).hexdigest()
    rows = {branding.image_key(kind): json.dumps({"content_type": content_type,
                                                   "sha256": digest}),
            branding.data_key(kind): json.dumps(base64.b64encode(data).decode())}
    now = clock.now()
    with database.atomic():
        for key, value in rows.items():
            (Setting.insert(key=key, value=value, updated_at=now)
             .on_conflict(conflict_target=[Setting.key],
                          update={Setting.value: value, Setting.updated_at: now})
             .execute())
        audit.record("branding.image_set", actor=principal.user, ip=principal.ip,
                     kind=kind, content_type=content_type, size=len(data), sha256=digest)
    return branding.current()


def remove_image(principal: Principal, kind: str) -> branding.Branding:
    """Go back to the built-in logo or favicon."""
    require_admin(principal)
    if kind not in branding.IMAGES:
        raise InvalidRequest("The image is a logo or a favicon.", field="kind")
    with database.atomic():
        removed = Setting.delete().where(Setting.key.in_(
            [branding.image_key(kind), branding.data_key(kind)])).execute()
        if removed:
            audit.record("branding.image_removed", actor=principal.user, ip=principal.ip,
                         kind=kind)
    return branding.current()
