"""The Settings page and `GET/PUT /admin/settings`: what an operator changes at run time
without a restart. Administrators only (403 `admin_only`).

Each setting's state says its value - for a secret only whether it is set - and where the
value comes from: its default, an administrator (stored in the database), or the
environment, the config file or create_app's overrides, which pin it (read-only here;
services/settings.py has the order). A change takes effect at once: the services read
these settings through `settings.get` when they need them.

`change` checks every value first, then stores them in one transaction with one audit
row (`settings.changed`) naming what changed - a secret as "(set)" or "(cleared)", never
its value. `send_test_mail` sends a mail now and returns the SMTP server's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance import config
from appliance.config import SETTINGS_BY_NAME
from appliance.db import database
from appliance.errors import Conflict, InvalidRequest
from appliance.models import MailOutbox
from appliance.services import audit, settings
from appliance.services.accounts import mail
from appliance.services.accounts.admin import require_admin
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints

# (key, title, settings) in the order of the page.
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("site", "Site", ("SITE_NAME", "SUPPORT_EMAIL", "SIGNUP", "REQUIRE_VERIFIED_EMAIL",
                      "NOTIFY_ADMINS_OF_SIGNUPS")),
    ("mail", "Mail (SMTP)", mail.SMTP_SETTINGS),
    ("webhooks", "Webhooks", ("WEBHOOKS_ALLOW_PRIVATE",)),
    ("sessions", "Sessions", ("SESSION_IDLE_MINUTES", "SESSION_MAX_HOURS")),
    ("retention", "Retention", ("EVENT_RETENTION_DAYS",)),
)
NAMES = tuple(name for _, _, names in GROUPS for name in names)
# The Branding page's texts (its images are services/ops/branding.py's).
BRANDING_NAMES = ("SITE_NAME", "BRANDING_ACCENT_COLOR", "BRANDING_FOOTER_TEXT",
                  "BRANDING_SUPPORT_URL")


@dataclass(frozen=True)
class State:
    """One setting as the page shows it."""

    name: str
    help: str
    secret: bool
    value: Any  # None for a secret
    is_set: bool  # a value other than empty (for a secret: whether one is set)
    default: Any
    source: str  # default | dashboard | environment | config_file | overrides
    source_detail: str | None  # APPLIANCE_SMTP_HOST, "<file>: smtp_host", ...
    kind: str  # text | number | boolean | choice | password
    choices: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.source not in ("default", "dashboard")


def _kind(name: str) -> tuple[str, tuple[str, ...]]:
    setting = SETTINGS_BY_NAME[name]
    choices = getattr(setting.parse, "choices", ())
    if setting.secret:
        return "password", ()
    if choices:
        return "choice", tuple(choices)
    if isinstance(setting.default, bool):
        return "boolean", ()
    if isinstance(setting.default, int):
        return "number", ()
    return "text", ()


def _source(name: str) -> tuple[str, str | None]:
    given = settings.pinned_by(name)
    if given is None:
        return ("dashboard" if settings.is_stored(name) else "default"), None
    if given.startswith(config.ENV_PREFIX):
        return "environment", given
    if given.startswith("overrides["):
        return "overrides", given
    return "config_file", given


def state(name: str) -> State:
    setting = SETTINGS_BY_NAME[name]
    value = settings.get(config.active(), name)
    source, detail = _source(name)
    kind, choices = _kind(name)
    return State(name=name, help=setting.help, secret=setting.secret,
                 value=None if setting.secret else value,
                 is_set=value not in ("", None) if not isinstance(value, bool) else True,
                 default=None if setting.secret else setting.default, source=source,
                 source_detail=detail, kind=kind, choices=choices)


def states(principal: Principal) -> list[State]:
    """Every setting of the page, in its order."""
    require_admin(principal)
    return [state(name) for name in NAMES]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def change(principal: Principal, values: dict[str, Any],
           page: tuple[str, ...] = NAMES) -> list[State]:
    """Store new values (name -> value; None puts the configured value or the default
    back); a value equal to the current one is left as it is. 400 naming the setting for
    a value that does not parse, or one that is not on the `page` (the Settings page's
    NAMES, or BRANDING_NAMES); 409 `setting_pinned` for a change to a pinned setting.
    Nothing is stored unless every value is good. Returns the page's settings."""
    require_admin(principal)
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        if name not in page:
            raise InvalidRequest(f"{name} is not a setting of this page.", field=name.lower())
        if value is None:
            parsed[name] = None
            continue
        try:
            parsed[name] = settings.parse(name, _text(value))
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, field=name.lower()) from None
        source = settings.pinned_by(name)
        if source is not None and parsed[name] != config.active()[name]:
            raise Conflict(f"{name} is set by {source}; change it there.",
                           code="setting_pinned",
                           details={"field": name.lower(), "source": source})
    changed: dict[str, Any] = {}
    with database.atomic():
        for name, value in parsed.items():
            if value is not None and value == settings.get(config.active(), name):
                continue  # as it is: nothing to store (a form sends every field)
            before, had = settings.get(config.active(), name), settings.is_stored(name)
            if value is None:
                settings.clear(name)
            else:
                settings.put(name, _text(value))
            after = settings.get(config.active(), name)
            if after != before or (value is None and had):
                changed[name] = (("(set)" if after else "(cleared)")
                                 if SETTINGS_BY_NAME[name].secret else after)
        if changed:
            audit.record("settings.changed", actor=principal.user, ip=principal.ip,
                         settings=changed)
    endpoints.forget_cached_setting()  # WEBHOOKS_ALLOW_PRIVATE is read through a cache
    return [state(name) for name in page]


def send_test_mail(principal: Principal, to: str | None = None) -> tuple[MailOutbox, str]:
    """A test mail to `to` (default: the administrator), sent now with the settings as
    they are; returns the outbox row and the SMTP server's answer (or refusal)."""
    require_admin(principal)
    row, answer = mail.send_test((to or principal.user.email).strip())
    with database.atomic():
        audit.record("settings.test_mail", actor=principal.user, ip=principal.ip,
                     success=row.status == "sent", to=row.to_addr, status=row.status)
    return row, answer
