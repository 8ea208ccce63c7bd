"""The operator's run-time settings (`/admin/settings`): read them with where each comes
from, change them, and send a test mail (services/ops/site_settings.py); the branding
(`/admin/settings/branding`: texts, colour, logo and favicon; services/ops/branding.py)."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, Schema
from appliance.errors import InvalidRequest
from appliance.services import branding
from appliance.services.ops import branding as brand_admin
from appliance.services.ops import site_settings
from appliance.services.principal import Principal

bp = ApiBlueprint("admin_settings_api", __name__)
TAGS = ("admin",)
AUTH = USER_OR_KEY  # an administrator, or their key with the admin scope

Value = str | int | bool | None


class SiteSettingOut(Schema):
    name: str = Field(description="The setting, in lower case (its environment variable "
                                  "is APPLIANCE_ and the name in upper case).")
    group: str
    value: Value = Field(description="null for a secret: see `is_set`.")
    is_set: bool = Field(description="Not empty; for a secret, whether one is set.")
    secret: bool
    default: Value = Field(description="null for a secret.")
    source: Literal["default", "dashboard", "environment", "config_file", "overrides"] = Field(
        description="Where the value comes from. environment, config_file and overrides "
                    "pin it: it cannot be changed here (409 setting_pinned).")
    source_detail: str | None = Field(description="The variable or file that pins it.")
    pinned: bool
    kind: Literal["text", "number", "boolean", "choice", "password"]
    choices: list[str]
    help: str


class SiteSettingsOut(Schema):
    data: list[SiteSettingOut]


class SiteSettingsIn(Schema):
    """The settings to change; an omitted one is unchanged, null puts back the value of
    the environment, the config file or the default."""

    site_name: str | None = Field(None, min_length=1, max_length=200)
    support_email: str | None = Field(None, max_length=254)
    signup: Literal["open", "closed", "invite"] | None = None
    require_verified_email: bool | None = None
    notify_admins_of_signups: bool | None = None
    smtp_host: str | None = Field(None, max_length=253, description="Empty: no SMTP "
                                  "server; mail is kept in the outbox.")
    smtp_port: int | None = Field(None, ge=0, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] | None = None
    smtp_user: str | None = Field(None, max_length=254)
    smtp_password: str | None = Field(None, max_length=500, description="Write-only.")
    smtp_from: str | None = Field(None, max_length=300)
    webhooks_allow_private: bool | None = None
    session_idle_minutes: int | None = Field(None, ge=1, le=10**6)
    session_max_hours: int | None = Field(None, ge=1, le=10**6)
    event_retention_days: int | None = Field(None, ge=1, le=36_500)


class TestMailIn(Schema):
    to: str | None = Field(None, max_length=254, description="Default: your own address.")


class TestMailOut(Schema):
    sent: bool
    to: str
    answer: str = Field(description="The SMTP server's reply to the message, or why it "
                                    "could not be sent (its refusal, or that it could not "
                                    "be reached).")
    mail_id: str = Field(description="The mail in the outbox.")


_GROUP = {name: key for key, _, names in site_settings.GROUPS for name in names}


def _out(states: list[site_settings.State]) -> SiteSettingsOut:
    return SiteSettingsOut(data=[SiteSettingOut(
        name=found.name.lower(), group=_GROUP[found.name], value=found.value,
        is_set=found.is_set, secret=found.secret, default=found.default, source=found.source,
        source_detail=found.source_detail, pinned=found.pinned, kind=found.kind,
        choices=list(found.choices), help=found.help) for found in states])


@bp.operation("/admin/settings", summary="The run-time settings and where each comes from",
              tags=TAGS, response=SiteSettingsOut, auth=AUTH, errors=(403,),
              description="Secrets are never sent back: `is_set` says whether one is set.")
def get_settings(principal: Principal):
    return _out(site_settings.states(principal))


@bp.operation("/admin/settings", "PUT", summary="Change run-time settings", tags=TAGS,
              body=SiteSettingsIn, response=SiteSettingsOut, auth=AUTH, errors=(403, 409),
              description="Takes effect at once, without a restart, and is audited "
                          "(`settings.changed`). 409 setting_pinned for a setting given in "
                          "the environment, the config file or the overrides.")
def put_settings(principal: Principal, body: SiteSettingsIn):
    values = {name.upper(): getattr(body, name) for name in body.model_fields_set}
    return _out(site_settings.change(principal, values))


@bp.operation("/admin/settings/test-mail", "POST", summary="Send a test mail now",
              tags=TAGS, body=TestMailIn, response=TestMailOut, auth=AUTH, errors=(403,),
              description="With the SMTP settings as they are; answers with what the "
                          "server said. 400 (field smtp_host) when no SMTP server is set "
                          "up.")
def test_mail(principal: Principal, body: TestMailIn):
    row, answer = site_settings.send_test_mail(principal, body.to)
    return TestMailOut(sent=row.status == "sent", to=row.to_addr, answer=answer,
                       mail_id=row.id)


# Branding ------------------------------------------------------------------------------


class BrandingOut(Schema):
    site_name: str
    accent_color: str = Field(description="#rrggbb; empty: the built-in colour.")
    footer_text: str
    support_url: str
    logo_url: str | None = Field(description="Changes with the image (cache-busting).")
    favicon_url: str | None
    theme_url: str | None
    pinned: list[str] = Field(description="Fields set in the environment, the config file "
                                          "or the overrides: read-only here.")


class BrandingIn(Schema):
    """The fields to change; an omitted one is unchanged, null puts the default back."""

    site_name: str | None = Field(None, min_length=1, max_length=200)
    accent_color: str | None = Field(None, max_length=7, description="#rrggbb or empty.")
    footer_text: str | None = Field(None, max_length=300)
    support_url: str | None = Field(None, max_length=500)


class BrandingImageIn(Schema):
    content_base64: str = Field(max_length=branding.IMAGE_MAX_BYTES * 4 // 3 + 8,
                                description="The PNG or JPEG file, base64-encoded (at most "
                                            f"{branding.IMAGE_MAX_BYTES // 1024} KB "
                                            "decoded). SVG is refused (svg_refused).")


def _branding_out(principal: Principal) -> BrandingOut:
    found = brand_admin.get(principal)
    pinned = [state.name.lower().removeprefix("branding_")
              for state in brand_admin.texts(principal) if state.pinned]
    return BrandingOut(site_name=found.site_name, accent_color=found.accent_color,
                       footer_text=found.footer_text, support_url=found.support_url,
                       logo_url=found.logo_url, favicon_url=found.favicon_url,
                       theme_url=found.theme_url, pinned=pinned)


BRANDING_FIELDS = {"site_name": "SITE_NAME", "accent_color": "BRANDING_ACCENT_COLOR",
                   "footer_text": "BRANDING_FOOTER_TEXT", "support_url": "BRANDING_SUPPORT_URL"}


@bp.operation("/admin/settings/branding", summary="The branding", tags=TAGS,
              response=BrandingOut, auth=AUTH, errors=(403,),
              description="Site name, accent colour, footer text, support URL, logo and "
                          "favicon, as pages, mails and invoices show them.")
def get_branding(principal: Principal):
    return _branding_out(principal)


@bp.operation("/admin/settings/branding", "PUT", summary="Change the branding's texts",
              tags=TAGS, body=BrandingIn, response=BrandingOut, auth=AUTH,
              errors=(400, 403, 409),
              description="In effect at once and audited (settings.changed).")
def put_branding(principal: Principal, body: BrandingIn):
    brand_admin.change(principal, {BRANDING_FIELDS[name]: getattr(body, name)
                                   for name in body.model_fields_set})
    return _branding_out(principal)


def _decoded(body: BrandingImageIn, kind: str) -> bytes:
    try:
        return base64.b64decode(body.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("content_base64 is not base64.", field="content_base64") from None


@bp.operation("/admin/settings/branding/<kind>", "PUT",
              summary="Upload the logo or the favicon", tags=TAGS, body=BrandingImageIn,
              response=BrandingOut, auth=AUTH, errors=(400, 403),
              description="PNG or JPEG, at most 512 KB and 4096 pixels a side; SVG is "
                          "refused (400 svg_refused: an SVG can carry scripts).")
def put_branding_image(principal: Principal, kind: str, body: BrandingImageIn):
    brand_admin.set_image(principal, kind, _decoded(body, kind))
    return _branding_out(principal)


@bp.operation("/admin/settings/branding/<kind>", "DELETE",
              summary="Remove the logo or the favicon (back to the built-in one)",
              tags=TAGS, response=BrandingOut, auth=AUTH, errors=(400, 403),
              description="400 (field kind) for anything but logo or favicon.")
def delete_branding_image(principal: Principal, kind: str):
    brand_admin.remove_image(principal, kind)
    return _branding_out(principal)
