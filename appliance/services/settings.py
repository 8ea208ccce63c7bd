"""Operator settings: the configured value unless an admin changed it at run time."""

from __future__ import annotations

import json
from typing import Any

from appliance.config import SETTINGS_BY_NAME
from appliance.db import database
from appliance.errors import InvalidRequest
from appliance.models import Setting
from appliance.services import clock

# Settings an admin may change from the dashboard; the rest need a restart.
RUNTIME_SETTINGS = ("SITE_NAME", "SIGNUP", "NOTIFY_ADMINS_OF_SIGNUPS", "BILLING_CURRENCY",
                    "BILLING_VAT_RATE_BP", "BILLING_MIN_BALANCE", "BILLING_GRACE_HOURS",
                    "BILLING_LOW_BALANCE_THRESHOLDS", "BILLING_OPERATOR_NAME",
                    "BILLING_OPERATOR_ADDRESS", "WEBHOOKS_ALLOW_PRIVATE")


def get(config: dict[str, Any], name: str) -> Any:
    """The run-time value of `name`: the stored one, else the configured one."""
    row = Setting.get_or_none(Setting.key == name)
    if row is None:
        return config[name]
    return json.loads(row.value)


def put(name: str, raw_value: str) -> Any:
    """Store a run-time value after parsing it like the configuration would."""
    if name not in RUNTIME_SETTINGS:
        raise InvalidRequest(f"{name} cannot be changed at run time.", field="name")
    try:
        value = SETTINGS_BY_NAME[name].parse(raw_value)
    except ValueError as exc:
        raise InvalidRequest(f"{name}: {exc}.", field="value") from None
    with database.atomic():
        (Setting.insert(key=name, value=json.dumps(value), updated_at=clock.now())
         .on_conflict(conflict_target=[Setting.key],
                      update={Setting.value: json.dumps(value), Setting.updated_at: clock.now()})
         .execute())
    return value


def public_config(config: dict[str, Any]) -> dict[str, Any]:
    """What anyone may know about this appliance before signing in."""
    signup = get(config, "SIGNUP")
    return {
        "site_name": get(config, "SITE_NAME"),
        "signup": signup,
        "signup_open": signup == "open",
    }
