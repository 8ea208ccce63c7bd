"""The catalog: plans, images and one-click apps.

Everyone signed in reads the active entries; administrators manage them. A plan or image
in use by an instance is deactivated rather than deleted (409 `in_use` on delete), so
existing instances keep their history and billing.
"""

from __future__ import annotations

import json
import re
from typing import Any

from peewee import IntegrityError

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.models import App, Image, Instance, Plan
from appliance.services import audit, clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.ids import new_id
from appliance.services.instances.nodes import ENGINES
from appliance.services.principal import Principal

SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,58}[a-z0-9])?$")
PLAN_FIELDS = ("name", "vcpus", "memory_mb", "disk_gb", "price_hourly", "price_monthly_cap",
               "active")
IMAGE_FIELDS = ("name", "family", "version", "min_disk_gb", "default_user", "description",
                "active")
APP_FIELDS = ("name", "description", "env", "min_vcpus", "min_memory_mb", "min_disk_gb",
              "active")


def _slug(slug: str) -> str:
    if not SLUG.match(slug or ""):
        raise InvalidRequest(f"A slug is 1-{SLUG_MAX} lowercase letters, digits and inner "
                             "dashes.", field="slug")
    return slug


# The limits of every catalog field, read by the JSON API's schemas and the dashboard's
# forms too (so the three agree): lengths of text, the largest size, price and env.
SLUG_MAX = 60
NAME_MAX = 100
LABEL_MAX = 60  # an image's family, version and default user
DESCRIPTION_MAX = 2000
REF_MAX = 300  # an image's ref on its engine
TEXT_LIMITS = {"name": NAME_MAX, "family": LABEL_MAX, "version": LABEL_MAX,
               "default_user": LABEL_MAX, "description": DESCRIPTION_MAX}
NUMBER_MAX = 1_000_000  # vCPUs, MB, GB
IMAGE_DISK_MAX = 100_000  # GB an image may need at least
PRICE_MAX = 10**12  # minor units
ENV_MAX = 100  # variables of an app


def _check_text(values: dict[str, Any]) -> None:
    """Normalise text fields in `values` (in place) and check them: names are required,
    every one has a length limit (the dashboard and the API both come through here)."""
    for field, most in TEXT_LIMITS.items():
        if field not in values:
            continue
        text = str(values[field])
        value = values[field] = " ".join(text.split()) if field == "name" else text.strip()
        if field in ("name", "default_user") and not value:
            raise InvalidRequest(f"{field} cannot be empty.", field=field)
        if len(value) > most:
            raise InvalidRequest(f"{field} has at most {most} characters.", field=field)
    for field in ("vcpus", "memory_mb", "disk_gb", "min_vcpus", "min_memory_mb",
                  "min_disk_gb"):
        if field in values and not 1 <= values[field] <= NUMBER_MAX:
            raise InvalidRequest(f"{field} is between 1 and {NUMBER_MAX}.", field=field)


def _check_plan(values: dict[str, Any]) -> None:
    _check_text(values)
    for field in ("vcpus", "memory_mb", "disk_gb"):
        if field in values and values[field] < 1:
            raise InvalidRequest(f"{field} must be at least 1.", field=field)
    for field in ("price_hourly", "price_monthly_cap"):
        if field in values and values[field] < 0:
            raise InvalidRequest(f"{field} cannot be negative.", field=field)


def _page(principal: Principal, query: Any, model: Any, *, include_inactive: bool, limit: int,
          cursor: str | None) -> pagination.Page[Any]:
    if not (include_inactive and principal.is_admin):
        query = query.where(model.active)
    return pagination.page(query, model, limit, cursor)


# Plans -------------------------------------------------------------------------------


def list_plans(principal: Principal, include_inactive: bool = False, limit: int = 50,
               cursor: str | None = None) -> pagination.Page[Plan]:
    return _page(principal, Plan.select(), Plan, include_inactive=include_inactive,
                 limit=limit, cursor=cursor)


def get_plan(plan_id: str, *, active: bool = True) -> Plan:
    plan = Plan.get_or_none((Plan.id == plan_id) | (Plan.slug == plan_id))
    if plan is None or (active and not plan.active):
        raise NotFound("No such plan.", code="plan_not_found")
    return plan


def create_plan(principal: Principal, slug: str, **values: Any) -> Plan:
    require_admin(principal)
    _check_plan(values)
    now = clock.now()
    try:
        with database.atomic():
            plan = Plan.create(id=new_id("pln"), slug=_slug(slug), created_at=now,
                               updated_at=now, **values)
            audit.record("plan.created", actor=principal.user, target_type="plan",
                         target_id=plan.id, ip=principal.ip, slug=slug)
    except IntegrityError:
        raise Conflict("A plan with this slug exists.", code="plan_exists",
                       details={"field": "slug"}) from None
    return plan


def update_plan(principal: Principal, plan_id: str, **values: Any) -> Plan:
    require_admin(principal)
    _check_plan(values)
    with database.atomic():
        plan = get_plan(plan_id, active=False)
        if values:
            Plan.update(updated_at=clock.now(), **values).where(Plan.id == plan.id).execute()
            audit.record("plan.updated", actor=principal.user, target_type="plan",
                         target_id=plan.id, ip=principal.ip, **values)
    return Plan.get_by_id(plan.id)


def delete_plan(principal: Principal, plan_id: str) -> None:
    require_admin(principal)
    with database.atomic():
        plan = get_plan(plan_id, active=False)
        if Instance.select().where(Instance.plan == plan).exists():
            raise Conflict("Instances use this plan; deactivate it instead.", code="in_use")
        plan.delete_instance()
        audit.record("plan.deleted", actor=principal.user, target_type="plan",
                     target_id=plan.id, ip=principal.ip, slug=plan.slug)


# Images ------------------------------------------------------------------------------


def list_images(principal: Principal, include_inactive: bool = False, limit: int = 50,
                cursor: str | None = None) -> pagination.Page[Image]:
    return _page(principal, Image.select(), Image, include_inactive=include_inactive,
                 limit=limit, cursor=cursor)


def get_image(image_id: str, *, active: bool = True) -> Image:
    image = Image.get_or_none(Image.id == image_id)
    if image is None or (active and not image.active):
        raise NotFound("No such image.", code="image_not_found")
    return image


def register_image(principal: Principal, engine: str, ref: str, name: str,
                   **values: Any) -> Image:
    """An image every node of `engine` has (node-specific ones are discovered)."""
    require_admin(principal)
    values = {"name": name, **values}
    _check_text(values)  # normalises in place
    name = values.pop("name")
    if engine not in ENGINES:
        raise InvalidRequest(f"engine must be one of {', '.join(ENGINES)}.", field="engine")
    if not ref.strip():
        raise InvalidRequest("ref names the engine's image.", field="ref")
    now = clock.now()
    try:
        with database.atomic():
            # The unique index cannot see duplicates when node is NULL (NULLs differ).
            if Image.select().where(Image.engine == engine, Image.ref == ref.strip(),
                                    Image.node.is_null()).exists():
                raise IntegrityError("duplicate image")
            image = Image.create(id=new_id("img"), engine=engine, ref=ref.strip(), name=name,
                                 created_at=now, updated_at=now, **values)
            audit.record("image.registered", actor=principal.user, target_type="image",
                         target_id=image.id, ip=principal.ip, engine=engine, ref=ref)
    except IntegrityError:
        raise Conflict("This image is registered.", code="image_exists",
                       details={"field": "ref"}) from None
    return image


def update_image(principal: Principal, image_id: str, **values: Any) -> Image:
    require_admin(principal)
    _check_text(values)
    with database.atomic():
        image = get_image(image_id, active=False)
        if values:
            Image.update(updated_at=clock.now(), **values).where(Image.id == image.id).execute()
            audit.record("image.updated", actor=principal.user, target_type="image",
                         target_id=image.id, ip=principal.ip, **values)
    return Image.get_by_id(image.id)


def delete_image(principal: Principal, image_id: str) -> None:
    require_admin(principal)
    with database.atomic():
        image = get_image(image_id, active=False)
        in_use = (Instance.select().where(Instance.image == image).exists()
                  or App.select().where(App.image == image).exists())
        if in_use:
            raise Conflict("Instances or apps use this image; deactivate it instead.",
                           code="in_use")
        image.delete_instance()
        audit.record("image.deleted", actor=principal.user, target_type="image",
                     target_id=image.id, ip=principal.ip)


# One-click apps ----------------------------------------------------------------------


def list_apps(principal: Principal, include_inactive: bool = False, limit: int = 50,
              cursor: str | None = None) -> pagination.Page[App]:
    query = App.select(App, Image).join(Image)
    return _page(principal, query, App, include_inactive=include_inactive, limit=limit,
                 cursor=cursor)


def get_app(slug: str, *, active: bool = True) -> App:
    app = App.select(App, Image).join(Image).where(App.slug == slug).first()
    if app is None or (active and not app.active):
        raise NotFound("No such app.", code="app_not_found")
    return app


def _app_values(values: dict[str, Any]) -> dict[str, Any]:
    _check_text(values)
    if "env" in values:
        env = values["env"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise InvalidRequest("env maps names to strings.", field="env")
        values["env"] = json.dumps(env)
    return values


def create_app(principal: Principal, slug: str, image_id: str,
               **values: Any) -> App:
    require_admin(principal)
    values = _app_values(values)
    now = clock.now()
    try:
        with database.atomic():
            image = Image.get_or_none(Image.id == image_id)
            if image is None:
                raise InvalidRequest("No such image.", field="image_id")
            app = App.create(id=new_id("app"), slug=_slug(slug), image=image, created_at=now,
                             updated_at=now, **values)
            audit.record("app.created", actor=principal.user, target_type="app",
                         target_id=app.id, ip=principal.ip, slug=slug)
    except IntegrityError:
        raise Conflict("An app with this slug exists.", code="app_exists",
                       details={"field": "slug"}) from None
    return get_app(app.slug, active=False)


def update_app(principal: Principal, slug: str, **values: Any) -> App:
    require_admin(principal)
    values = _app_values(values)
    with database.atomic():
        app = get_app(slug, active=False)
        if values:
            App.update(updated_at=clock.now(), **values).where(App.id == app.id).execute()
            audit.record("app.updated", actor=principal.user, target_type="app",
                         target_id=app.id, ip=principal.ip)
    return get_app(slug, active=False)


def delete_app(principal: Principal, slug: str) -> None:
    require_admin(principal)
    with database.atomic():
        app = get_app(slug, active=False)
        app.delete_instance()
        audit.record("app.deleted", actor=principal.user, target_type="app",
                     target_id=app.id, ip=principal.ip, slug=slug)
