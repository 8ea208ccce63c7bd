"""Operator settings changed at run time, stored in the database (the `setting` table).

Where a run-time setting's value comes from, the first that applies:

1. The environment (`APPLIANCE_<NAME>`, `APPLIANCE_<NAME>_FILE`), the config file or
   `create_app`'s overrides: the setting is *pinned*. That value is used as given, the
   dashboard shows it read-only with where it comes from, and changing it at run time is
   refused (409 `setting_pinned`; putting the same value again changes nothing).
2. The value an administrator stored (`put`), until `clear`ed.
3. The setting's default.

A secret (`SMTP_PASSWORD`) is stored sealed (services/sealing.py) and read back only by
the service that uses it; clients are told whether it is set, never its value. A stored
secret that no longer unseals (SECRET_KEY changed) counts as not stored.
"""

from __future__ import annotations

import json
from typing import Any

from appliance import config
from appliance.config import SETTINGS_BY_NAME
from appliance.db import database
from appliance.errors import Conflict, InvalidRequest
from appliance.models import Setting
from appliance.services import clock, sealing

# Settings an admin may change from the dashboard; the rest need a restart.
RUNTIME_SETTINGS = ("SITE_NAME", "SUPPORT_EMAIL", "SIGNUP", "NOTIFY_ADMINS_OF_SIGNUPS",
                    "REQUIRE_VERIFIED_EMAIL", "BRANDING_ACCENT_COLOR", "BRANDING_FOOTER_TEXT",
                    "BRANDING_SUPPORT_URL",
                    "SMTP_HOST", "SMTP_PORT", "SMTP_SECURITY", "SMTP_USER", "SMTP_PASSWORD",
                    "SMTP_FROM", "WEBHOOKS_ALLOW_PRIVATE", "SESSION_IDLE_MINUTES",
                    "SESSION_MAX_HOURS", "EVENT_RETENTION_DAYS",
                    "BILLING_CURRENCY", "BILLING_VAT_RATE_BP", "BILLING_MIN_BALANCE",
                    "BILLING_GRACE_HOURS", "BILLING_LOW_BALANCE_THRESHOLDS",
                    "BILLING_OPERATOR_NAME", "BILLING_OPERATOR_ADDRESS",
                    "BILLING_BACKUP_TIER_BASIC_HOURLY", "BILLING_BACKUP_TIER_EXTENDED_HOURLY",
                    "BACKUP_TIER_BASIC_DAYS", "BACKUP_TIER_EXTENDED_DAYS",
                    "BACKUP_TIER_EXTENDED_WEEKS")


def pinned_by(name: str) -> str | None:
    """Where a pinned setting was given (`APPLIANCE_SMTP_HOST`, ...), None when it is not."""
    return config.source_of(name)


def _stored(name: str) -> tuple[bool, Any]:
    """(True, value) for a usable stored value, else (False, None)."""
    row = Setting.get_or_none(Setting.key == name)
    if row is None:
        return False, None
    value = json.loads(row.value)
    if SETTINGS_BY_NAME[name].secret:
        value = sealing.unseal(value)
        if value is None:
            return False, None
    return True, value


def get(config_values: dict[str, Any], name: str) -> Any:
    """The run-time value of `name` (see the module's order)."""
    if pinned_by(name) is not None:
        return config_values[name]
    found, value = _stored(name)
    return value if found else config_values[name]


def is_stored(name: str) -> bool:
    """Whether an administrator's value is in use for `name` (not pinned, stored)."""
    return pinned_by(name) is None and _stored(name)[0]


def parse(name: str, raw_value: str) -> Any:
    """`raw_value` parsed as the configuration would; 400 naming the setting otherwise."""
    if name not in RUNTIME_SETTINGS:
        raise InvalidRequest(f"{name} cannot be changed at run time.", field="name")
    try:
        return SETTINGS_BY_NAME[name].parse(raw_value)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}.", field="value") from None


def put(name: str, raw_value: str) -> Any:
    """Store a run-time value after parsing it like the configuration would; returns it.

    409 `setting_pinned` when the setting is pinned to another value."""
    value = parse(name, raw_value)
    source = pinned_by(name)
    if source is not None:
        if value == config.active()[name]:
            return value
        raise Conflict(f"{name} is set by {source}; change it there.", code="setting_pinned",
                       details={"setting": name, "source": source})
    stored = sealing.seal(value) if SETTINGS_BY_NAME[name].secret else value
    now = clock.now()
    with database.atomic():
        (Setting.insert(key=name, value=json.dumps(stored), updated_at=now)
         .on_conflict(conflict_target=[Setting.key],
                      update={Setting.value: json.dumps(stored), Setting.updated_at: now})
         .execute())
    return value


def clear(name: str) -> None:
    """Forget the stored value: the setting is back to its configured value or default."""
    if name not in RUNTIME_SETTINGS:
        raise InvalidRequest(f"{name} cannot be changed at run time.", field="name")
    with database.atomic():
        Setting.delete().where(Setting.key == name).execute()


def public_config(config_values: dict[str, Any]) -> dict[str, Any]:
    """What anyone may know about this appliance before signing in."""
    signup = get(config_values, "SIGNUP")
    return {
        "site_name": get(config_values, "SITE_NAME"),
        "support_email": get(config_values, "SUPPORT_EMAIL"),
        "signup": signup,
        "signup_open": signup == "open",
    }
