"""The first-run checklist of the admin home: what a new operator sets up, each item
ticked by the state it asks for (never by a click on the list itself). Administrators
only (403 `admin_only`).

Items, in order:

- `plans`: an active plan exists. `add_starter_plans` adds three with one click.
- `nodes`: an enabled, healthy node exists. `nodes.register_missing_local_engines`
  registers a local engine installed after the first start.
- `mail`: an SMTP server is set (without one mail waits in the outbox).
- `site`: the site has a name of its own and a support address.
- `billing`: the seller's name for invoices is set.
- `promo`: a promo code exists.

The list shows until every item is done.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance import config
from appliance.errors import Conflict
from appliance.models import Node, Plan, PromoCode
from appliance.services import settings
from appliance.services.accounts.admin import require_admin
from appliance.services.instances import catalog
from appliance.services.principal import Principal

ITEMS = ("plans", "nodes", "mail", "site", "billing", "promo")

# Three plans to start from (prices in minor units of the billing currency, per hour,
# capped per month): an operator changes or deactivates them on the plans page.
STARTER_PLANS = (
    {"slug": "small", "name": "Small", "vcpus": 1, "memory_mb": 1024, "disk_gb": 10,
     "price_hourly": 1, "price_monthly_cap": 300},
    {"slug": "medium", "name": "Medium", "vcpus": 2, "memory_mb": 2048, "disk_gb": 25,
     "price_hourly": 2, "price_monthly_cap": 600},
    {"slug": "large", "name": "Large", "vcpus": 4, "memory_mb": 8192, "disk_gb": 80,
     "price_hourly": 5, "price_monthly_cap": 1500},
)


@dataclass(frozen=True)
class Checklist:
    done: dict[str, bool]  # item -> ticked, in ITEMS order

    @property
    def complete(self) -> bool:
        return all(self.done.values())

    @property
    def remaining(self) -> int:
        return sum(not done for done in self.done.values())


def _site_named() -> bool:
    active = config.active()
    default = config.SETTINGS_BY_NAME["SITE_NAME"].default
    return (settings.get(active, "SITE_NAME") != default
            and bool(settings.get(active, "SUPPORT_EMAIL")))


def checklist(principal: Principal) -> Checklist:
    require_admin(principal)
    active = config.active()
    return Checklist({
        "plans": Plan.select().where(Plan.active).exists(),
        "nodes": Node.select().where(Node.enabled, Node.health == "healthy").exists(),
        "mail": bool(settings.get(active, "SMTP_HOST")),
        "site": _site_named(),
        "billing": bool(settings.get(active, "BILLING_OPERATOR_NAME")),
        "promo": PromoCode.select().exists(),
    })


def add_starter_plans(principal: Principal) -> list[Plan]:
    """Add STARTER_PLANS; a slug already taken is left as it is. Returns the new plans
    (409 `plan_exists` when all three slugs are taken)."""
    require_admin(principal)
    made = []
    for values in STARTER_PLANS:
        fields = {name: value for name, value in values.items() if name != "slug"}
        try:
            made.append(catalog.create_plan(principal, str(values["slug"]), **fields))
        except Conflict:
            continue
    if not made:
        raise Conflict("Plans named small, medium and large exist already.",
                       code="plan_exists")
    return made
