"""The catalog over JSON: plans, images and one-click apps (everyone signed in reads;
administrators manage them under /admin), and the nodes administrators register."""

from __future__ import annotations

import datetime as dt
import json
from typing import Literal

from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.errors import InvalidRequest
from appliance.models import App, Image, Node, Plan
from appliance.services.instances import catalog, nodes
from appliance.services.principal import Principal

bp = ApiBlueprint("catalog_api", __name__)
TAGS = ("catalog",)
ADMIN_TAGS = ("admin",)
AUTH = USER_OR_KEY
ERRORS = (403, 404, 409)
Engine = Literal["incus", "docker", "fake"]
Small = Field(ge=1, le=catalog.NUMBER_MAX)
Money = Field(ge=0, le=catalog.PRICE_MAX)


class CatalogQuery(ListQuery):
    all: bool = Field(False, description="Administrators: include inactive entries.")


class PlanOut(Schema):
    id: str
    slug: str
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    price_hourly: int = Field(description="Minor units of the billing currency.")
    price_monthly_cap: int
    active: bool

    @classmethod
    def of(cls, plan: Plan) -> PlanOut:
        return cls(id=plan.id, slug=plan.slug, name=plan.name, vcpus=plan.vcpus,
                   memory_mb=plan.memory_mb, disk_gb=plan.disk_gb,
                   price_hourly=plan.price_hourly, price_monthly_cap=plan.price_monthly_cap,
                   active=plan.active)


class PlanList(Schema):
    data: list[PlanOut]
    page: PageInfo


class PlanIn(Schema):
    slug: str = Field(min_length=1, max_length=catalog.SLUG_MAX)
    name: str = Field(min_length=1, max_length=catalog.NAME_MAX)
    vcpus: int = Small
    memory_mb: int = Small
    disk_gb: int = Small
    price_hourly: int = Money
    price_monthly_cap: int = Money
    active: bool = True


class PlanPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=catalog.NAME_MAX)
    vcpus: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    memory_mb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    disk_gb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    price_hourly: int | None = Field(None, ge=0, le=catalog.PRICE_MAX)
    price_monthly_cap: int | None = Field(None, ge=0, le=catalog.PRICE_MAX)
    active: bool | None = None


class ImageOut(Schema):
    id: str
    name: str
    family: str
    version: str
    engine: Engine
    ref: str
    node_id: str | None
    min_disk_gb: int
    default_user: str
    description: str
    discovered: bool
    active: bool

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls(id=image.id, name=image.name, family=image.family, version=image.version,
                   engine=image.engine, ref=image.ref, node_id=image.node_id,
                   min_disk_gb=image.min_disk_gb, default_user=image.default_user,
                   description=image.description, discovered=image.discovered,
                   active=image.active)


class ImageList(Schema):
    data: list[ImageOut]
    page: PageInfo


class ImageIn(Schema):
    engine: Engine
    ref: str = Field(min_length=1, max_length=catalog.REF_MAX)
    name: str = Field(min_length=1, max_length=catalog.NAME_MAX)
    family: str = Field("", max_length=catalog.LABEL_MAX)
    version: str = Field("", max_length=catalog.LABEL_MAX)
    min_disk_gb: int = Field(1, ge=1, le=catalog.IMAGE_DISK_MAX)
    default_user: str = Field("root", min_length=1, max_length=catalog.LABEL_MAX)
    description: str = Field("", max_length=catalog.DESCRIPTION_MAX)
    active: bool = True


class ImagePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=catalog.NAME_MAX)
    family: str | None = Field(None, max_length=catalog.LABEL_MAX)
    version: str | None = Field(None, max_length=catalog.LABEL_MAX)
    min_disk_gb: int | None = Field(None, ge=1, le=catalog.IMAGE_DISK_MAX)
    default_user: str | None = Field(None, min_length=1, max_length=catalog.LABEL_MAX)
    description: str | None = Field(None, max_length=catalog.DESCRIPTION_MAX)
    active: bool | None = None


class AppOut(Schema):
    id: str
    slug: str
    name: str
    description: str
    image: ImageOut
    env: dict[str, str]
    min_vcpus: int
    min_memory_mb: int
    min_disk_gb: int
    active: bool

    @classmethod
    def of(cls, app: App) -> AppOut:
        return cls(id=app.id, slug=app.slug, name=app.name, description=app.description,
                   image=ImageOut.of(app.image), env=json.loads(app.env or "{}"),
                   min_vcpus=app.min_vcpus, min_memory_mb=app.min_memory_mb,
                   min_disk_gb=app.min_disk_gb, active=app.active)


class AppList(Schema):
    data: list[AppOut]
    page: PageInfo


class AppIn(Schema):
    slug: str = Field(min_length=1, max_length=catalog.SLUG_MAX)
    name: str = Field(min_length=1, max_length=catalog.NAME_MAX)
    image_id: str = Field(min_length=1, max_length=40)
    description: str = Field("", max_length=catalog.DESCRIPTION_MAX)
    env: dict[str, str] = Field(default_factory=dict, max_length=catalog.ENV_MAX)
    min_vcpus: int = Field(1, ge=1, le=catalog.NUMBER_MAX)
    min_memory_mb: int = Field(128, ge=1, le=catalog.NUMBER_MAX)
    min_disk_gb: int = Field(1, ge=1, le=catalog.NUMBER_MAX)
    active: bool = True


class AppPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=catalog.NAME_MAX)
    description: str | None = Field(None, max_length=catalog.DESCRIPTION_MAX)
    env: dict[str, str] | None = Field(None, max_length=catalog.ENV_MAX)
    min_vcpus: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    min_memory_mb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    min_disk_gb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    active: bool | None = None


class NodeOut(Schema):
    id: str
    name: str
    engine: Engine
    endpoint: str
    simulated: bool = Field(description="The fake engine: nothing really runs.")
    capacity_vcpus: int = Field(description="The capacity set for the node (by hand, or "
                                            "the engine's figures at registration).")
    capacity_memory_mb: int
    capacity_disk_gb: int
    vcpu_ratio: float = Field(description="Overcommit: placement allots capacity x ratio.")
    memory_ratio: float
    disk_ratio: float
    allotted_vcpus: int = Field(description="capacity_vcpus x vcpu_ratio, rounded down.")
    allotted_memory_mb: int
    allotted_disk_gb: int
    free_vcpus: int = Field(description="Allotted minus what its instances' plans take.")
    free_memory_mb: int
    free_disk_gb: int
    engine_vcpus: int | None = Field(description="What the engine reported at the last "
                                                 "check; null: it reports none.")
    engine_memory_mb: int | None
    engine_disk_gb: int | None
    enabled: bool
    health: Literal["unknown", "healthy", "unhealthy"]
    health_message: str
    engine_version: str
    unknown_instances: list[str] = Field(description="Engine instances named like the "
                                         "appliance's that no instance row knows.")
    last_checked_at: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, node: Node) -> NodeOut:
        free, allotted, ratios = (nodes.free_capacity(node), nodes.allotted_capacity(node),
                                  nodes.ratios_of(node))
        return cls(id=node.id, name=node.name, engine=node.engine, endpoint=node.endpoint,
                   simulated=node.simulated, capacity_vcpus=node.capacity_vcpus,
                   capacity_memory_mb=node.capacity_memory_mb,
                   capacity_disk_gb=node.capacity_disk_gb, vcpu_ratio=ratios.vcpu,
                   memory_ratio=ratios.memory, disk_ratio=ratios.disk,
                   allotted_vcpus=allotted.vcpus, allotted_memory_mb=allotted.memory_mb,
                   allotted_disk_gb=allotted.disk_gb, engine_vcpus=node.engine_vcpus,
                   engine_memory_mb=node.engine_memory_mb, engine_disk_gb=node.engine_disk_gb,
                   free_vcpus=free.vcpus,
                   free_memory_mb=free.memory_mb, free_disk_gb=free.disk_gb,
                   enabled=node.enabled, health=node.health,
                   health_message=node.health_message, engine_version=node.engine_version,
                   unknown_instances=json.loads(node.unknown_instances or "[]"),
                   last_checked_at=node.last_checked_at, created_at=node.created_at)


class NodeList(Schema):
    data: list[NodeOut]
    page: PageInfo


class NodeIn(Schema):
    name: str = Field(min_length=1, max_length=nodes.NAME_MAX)
    engine: Engine
    endpoint: str = Field("", max_length=nodes.ENDPOINT_MAX,
                          description="unix:///path, https://host:port, tcp://host:port; "
                                      "empty: local.")
    options: dict[str, str] = Field(default_factory=dict, max_length=nodes.OPTIONS_MAX,
                                    description="TLS files: client_cert, client_key, "
                                                "server_cert / ca_cert.")
    capacity_vcpus: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX,
                                       description="Omit the three to take the engine's "
                                                   "own figures (400 when it reports none).")
    capacity_memory_mb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    capacity_disk_gb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    vcpu_ratio: float = Field(4.0, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)
    memory_ratio: float = Field(1.0, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)
    disk_ratio: float = Field(1.0, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)
    enabled: bool = True


class NodePatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=nodes.NAME_MAX)
    enabled: bool | None = None
    capacity_vcpus: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    capacity_memory_mb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    capacity_disk_gb: int | None = Field(None, ge=1, le=catalog.NUMBER_MAX)
    vcpu_ratio: float | None = Field(None, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)
    memory_ratio: float | None = Field(None, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)
    disk_ratio: float | None = Field(None, ge=nodes.RATIO_MIN, le=nodes.RATIO_MAX)


def _set(body: Schema) -> dict:
    return body.model_dump(exclude_none=True)


# Everyone signed in --------------------------------------------------------------------


@bp.operation("/plans", summary="Plans to choose from", tags=TAGS, query=CatalogQuery,
              response=PlanList, auth=AUTH)
def list_plans(principal: Principal, query: CatalogQuery):
    rows, cursor = catalog.list_plans(principal, query.all, query.limit, query.cursor)
    return page_body([PlanOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/images", summary="Images to create instances from", tags=TAGS,
              query=CatalogQuery, response=ImageList, auth=AUTH)
def list_images(principal: Principal, query: CatalogQuery):
    rows, cursor = catalog.list_images(principal, query.all, query.limit, query.cursor)
    return page_body([ImageOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/apps", summary="One-click apps", tags=TAGS, query=CatalogQuery,
              response=AppList, auth=AUTH)
def list_apps(principal: Principal, query: CatalogQuery):
    rows, cursor = catalog.list_apps(principal, query.all, query.limit, query.cursor)
    return page_body([AppOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/apps/<slug>", summary="One app", tags=TAGS, response=AppOut, auth=AUTH,
              errors=(404,))
def get_app(principal: Principal, slug: str):
    return AppOut.of(catalog.get_app(slug))


# Administrators ------------------------------------------------------------------------


@bp.operation("/admin/plans", "POST", summary="Add a plan", tags=ADMIN_TAGS, body=PlanIn,
              response=PlanOut, status=201, auth=AUTH, errors=ERRORS)
def create_plan(principal: Principal, body: PlanIn):
    values = _set(body)
    return PlanOut.of(catalog.create_plan(principal, values.pop("slug"),
                                          **values))


@bp.operation("/admin/plans/<plan_id>", "PATCH", summary="Change or deactivate a plan",
              tags=ADMIN_TAGS, body=PlanPatch, response=PlanOut, auth=AUTH, errors=ERRORS)
def update_plan(principal: Principal, plan_id: str, body: PlanPatch):
    return PlanOut.of(catalog.update_plan(principal, plan_id, **_set(body)))


@bp.operation("/admin/plans/<plan_id>", "DELETE", summary="Delete an unused plan",
              tags=ADMIN_TAGS, status=204, auth=AUTH, errors=ERRORS)
def delete_plan(principal: Principal, plan_id: str):
    catalog.delete_plan(principal, plan_id)
    return None, 204


@bp.operation("/admin/images", "POST", summary="Register an image of an engine",
              tags=ADMIN_TAGS, body=ImageIn, response=ImageOut, status=201, auth=AUTH,
              errors=ERRORS)
def register_image(principal: Principal, body: ImageIn):
    values = _set(body)
    return ImageOut.of(catalog.register_image(principal, values.pop("engine"),
                                              values.pop("ref"), values.pop("name"), **values))


@bp.operation("/admin/images/<image_id>", "PATCH", summary="Change or deactivate an image",
              tags=ADMIN_TAGS, body=ImagePatch, response=ImageOut, auth=AUTH, errors=ERRORS)
def update_image(principal: Principal, image_id: str, body: ImagePatch):
    return ImageOut.of(catalog.update_image(principal, image_id, **_set(body)))


@bp.operation("/admin/images/<image_id>", "DELETE", summary="Delete an unused image",
              tags=ADMIN_TAGS, status=204, auth=AUTH, errors=ERRORS)
def delete_image(principal: Principal, image_id: str):
    catalog.delete_image(principal, image_id)
    return None, 204


@bp.operation("/admin/apps", "POST", summary="Add a one-click app", tags=ADMIN_TAGS,
              body=AppIn, response=AppOut, status=201, auth=AUTH, errors=ERRORS)
def create_app(principal: Principal, body: AppIn):
    values = _set(body)
    return AppOut.of(catalog.create_app(principal, values.pop("slug"), values.pop("image_id"),
                                        **values))


@bp.operation("/admin/apps/<slug>", "PATCH", summary="Change or deactivate an app",
              tags=ADMIN_TAGS, body=AppPatch, response=AppOut, auth=AUTH, errors=ERRORS)
def update_app(principal: Principal, slug: str, body: AppPatch):
    return AppOut.of(catalog.update_app(principal, slug, **_set(body)))


@bp.operation("/admin/apps/<slug>", "DELETE", summary="Delete an app", tags=ADMIN_TAGS,
              status=204, auth=AUTH, errors=ERRORS)
def delete_app(principal: Principal, slug: str):
    catalog.delete_app(principal, slug)
    return None, 204


@bp.operation("/admin/nodes", summary="Nodes and their health", tags=ADMIN_TAGS,
              query=ListQuery, response=NodeList, auth=AUTH, errors=(403,))
def list_nodes(principal: Principal, query: ListQuery):
    rows, cursor = nodes.list_nodes(principal, query.limit, query.cursor)
    return page_body([NodeOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/admin/nodes", "POST", summary="Register a node (checked at once)",
              tags=ADMIN_TAGS, body=NodeIn, response=NodeOut, status=201, auth=AUTH,
              errors=ERRORS)
def register_node(principal: Principal, body: NodeIn):
    given = (body.capacity_vcpus, body.capacity_memory_mb, body.capacity_disk_gb)
    if given.count(None) not in (0, 3):
        raise InvalidRequest("Give all three capacity figures, or none (the engine's own).",
                             field=("capacity_vcpus", "capacity_memory_mb",
                                    "capacity_disk_gb")[given.index(None)])
    capacity = nodes.Capacity(*given) if None not in given else None  # type: ignore[arg-type]
    ratios = nodes.Ratios(body.vcpu_ratio, body.memory_ratio, body.disk_ratio)
    return NodeOut.of(nodes.register_node(principal, body.name, body.engine, body.endpoint,
                                          capacity=capacity, ratios=ratios,
                                          options=body.options,
                                          enabled=body.enabled))


@bp.operation("/admin/nodes/<node_id>", summary="One node", tags=ADMIN_TAGS, response=NodeOut,
              auth=AUTH, errors=(403, 404))
def get_node(principal: Principal, node_id: str):
    return NodeOut.of(nodes.get_node(principal, node_id))


@bp.operation("/admin/nodes/<node_id>", "PATCH", summary="Enable, disable, rename or resize "
              "a node", tags=ADMIN_TAGS, body=NodePatch, response=NodeOut, auth=AUTH,
              errors=ERRORS)
def update_node(principal: Principal, node_id: str, body: NodePatch):
    node = nodes.get_node(principal, node_id)
    capacity = None
    if {body.capacity_vcpus, body.capacity_memory_mb, body.capacity_disk_gb} != {None}:
        capacity = nodes.Capacity(body.capacity_vcpus or node.capacity_vcpus,
                                  body.capacity_memory_mb or node.capacity_memory_mb,
                                  body.capacity_disk_gb or node.capacity_disk_gb)
    ratios = None
    if {body.vcpu_ratio, body.memory_ratio, body.disk_ratio} != {None}:
        now = nodes.ratios_of(node)
        ratios = nodes.Ratios(body.vcpu_ratio or now.vcpu, body.memory_ratio or now.memory,
                              body.disk_ratio or now.disk)
    return NodeOut.of(nodes.update_node(principal, node_id, enabled=body.enabled,
                                        capacity=capacity, name=body.name, ratios=ratios))


@bp.operation("/admin/nodes/<node_id>", "DELETE", summary="Remove a node without instances",
              tags=ADMIN_TAGS, status=204, auth=AUTH, errors=ERRORS,
              description="409 node_not_empty while instances live on it; 409 node_in_use, "
                          "with the counts in details, while deleted instances (history), "
                          "backups or apps still refer to it: disable it instead.")
def delete_node(principal: Principal, node_id: str):
    nodes.delete_node(principal, node_id)
    return None, 204


@bp.operation("/admin/nodes/<node_id>/check", "POST", summary="Check health and discover "
              "images now", tags=ADMIN_TAGS, response=NodeOut, auth=AUTH, errors=(403, 404))
def check_node(principal: Principal, node_id: str):
    return NodeOut.of(nodes.check_health(nodes.get_node(principal, node_id)))
