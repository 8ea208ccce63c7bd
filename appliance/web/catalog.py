"""Admin pages for what instances are made from and where they run: nodes, plans,
images and one-click apps.

The services (services/instances/catalog.py, services/instances/nodes.py) check the
administrator and every
rule and own the limits the forms show; a view here parses the form (web/forms.py) -
numbers, money in the display currency, key=value lines - calls the one service
function the JSON API calls, and redirects with a notice, or re-renders the page with
the service's error next to the field it names.
"""

from __future__ import annotations

import json

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import InvalidRequest
from appliance.services import money
from appliance.services.billing import billing_state
from appliance.services.instances import catalog, nodes
from appliance.web import forms
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_catalog", __name__, url_prefix="/admin")


# Parsing the forms --------------------------------------------------------------------


def _number(name: str, *, most: int = catalog.NUMBER_MAX) -> int:
    return forms.required_integer(name, least=1, most=most)


def _price(name: str) -> int:
    """A price typed in the display currency ("0.05", "0,05") as minor units (5)."""
    return forms.required_money(name, billing_state.currency())


# Rendering ----------------------------------------------------------------------------


def _page(template: str, status: int = 200, **context):
    context.setdefault("form", {})
    context.setdefault("section", None)
    context.setdefault("notice", request.args.get("notice"))
    context.setdefault("warning", request.args.get("warning"))
    currency = billing_state.currency()
    return render_template(template, amount=lambda minor: money.major(minor, currency),
                           **context), status


# Nodes --------------------------------------------------------------------------------


def _nodes_page(status: int = 200, fragment: str | None = None, **context):
    rows = forms.every_page(nodes.list_nodes, current_principal())
    return _page("admin/nodes.html", status, nodes=rows, engines=nodes.ENGINES,
                 free={node.id: nodes.free_capacity(node) for node in rows},
                 live={node.id: nodes.live_instances(node) for node in rows},
                 unknown={node.id: json.loads(node.unknown_instances or "[]") for node in rows},
                 **context)


@bp.get("/nodes")
@admin_required
def node_list():
    return _nodes_page()


def _capacity() -> nodes.Capacity:
    return nodes.Capacity(_number("capacity_vcpus"), _number("capacity_memory_mb"),
                          _number("capacity_disk_gb"))


def _capacity_or_engine() -> nodes.Capacity | None:
    """The capacity typed, or None (the engine's own figures) when all three are empty."""
    names = ("capacity_vcpus", "capacity_memory_mb", "capacity_disk_gb")
    if not any(request.form.get(name, "").strip() for name in names):
        return None
    return _capacity()


def _ratio(name: str, default: float) -> float:
    raw = request.form.get(name, "").strip().replace(",", ".")
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidRequest(f"{name} is a number such as 4 or 1.5.", field=name) from None


def _ratios(now: nodes.Ratios = nodes.Ratios()) -> nodes.Ratios:  # noqa: B008 - frozen
    return nodes.Ratios(_ratio("vcpu_ratio", now.vcpu), _ratio("memory_ratio", now.memory),
                        _ratio("disk_ratio", now.disk))


NODES = "admin_catalog.node_list"


@bp.post("/nodes")
@admin_required
@forms.rerender_on_error(_nodes_page, "register")
def register_node():
    node = nodes.register_node(
        current_principal(), forms.text("name", max_length=nodes.NAME_MAX),
        request.form.get("engine", ""), request.form.get("endpoint", "").strip(),
        capacity=_capacity_or_engine(), ratios=_ratios(),
        options=forms.pairs("options", max_lines=nodes.OPTIONS_MAX),
        enabled=forms.checked("enabled"))
    if node.health != "healthy":
        return _warn(f"{node.name} is registered, but unreachable: {node.health_message}")
    return forms.back(NODES, "Node registered and checked.")


def _warn(message: str):
    """Redirect to the nodes page with a warning (not the green notice)."""
    return redirect(url_for(NODES, warning=message))


@bp.post("/nodes/<node_id>/edit")
@admin_required
@forms.rerender_on_error(_nodes_page, "node-{node_id}")
def edit_node(node_id: str):
    principal = current_principal()
    now = nodes.ratios_of(nodes.get_node(principal, node_id))
    nodes.update_node(principal, node_id, name=forms.text("name", max_length=nodes.NAME_MAX),
                      capacity=_capacity(), ratios=_ratios(now))
    return forms.back(NODES, "Node saved.")


@bp.post("/nodes/<node_id>/enabled")
@admin_required
@forms.rerender_on_error(_nodes_page, "node-{node_id}", keep_form=False)
def enable_node(node_id: str):
    enabled = forms.checked("enabled")
    nodes.update_node(current_principal(), node_id, enabled=enabled)
    return forms.back(NODES, "Node enabled: new instances may be placed on it." if enabled
                      else "Node disabled: no new instance is placed on it.")


@bp.post("/nodes/<node_id>/check")
@admin_required
@forms.rerender_on_error(_nodes_page, "node-{node_id}", keep_form=False)
def check_node(node_id: str):
    node = nodes.check_health(nodes.get_node(current_principal(), node_id))
    if node.health != "healthy":
        return _warn(f"{node.name} is unreachable: {node.health_message}")
    return forms.back(NODES, f"{node.name} is {node.health}.")


@bp.post("/nodes/<node_id>/delete")
@admin_required
@forms.rerender_on_error(_nodes_page, "node-{node_id}", keep_form=False)
def delete_node(node_id: str):
    nodes.delete_node(current_principal(), node_id)
    return forms.back(NODES, "Node removed.")


# Plans --------------------------------------------------------------------------------


def _plans_page(status: int = 200, fragment: str | None = None, **context):
    return _page("admin/plans.html", status,
                 plans=forms.every_page(catalog.list_plans, current_principal(), True),
                 **context)


@bp.get("/plans")
@admin_required
def plan_list():
    return _plans_page()


def _plan_values() -> dict:
    return {"name": forms.text("name", max_length=catalog.NAME_MAX),
            "vcpus": _number("vcpus"), "memory_mb": _number("memory_mb"),
            "disk_gb": _number("disk_gb"), "price_hourly": _price("price_hourly"),
            "price_monthly_cap": _price("price_monthly_cap")}


PLANS = "admin_catalog.plan_list"


@bp.post("/plans")
@admin_required
@forms.rerender_on_error(_plans_page, "create")
def create_plan():
    catalog.create_plan(current_principal(), forms.text("slug", max_length=catalog.SLUG_MAX),
                        active=forms.checked("active"), **_plan_values())
    return forms.back(PLANS, "Plan added.")


@bp.post("/plans/<plan_id>/edit")
@admin_required
@forms.rerender_on_error(_plans_page, "plan-{plan_id}")
def edit_plan(plan_id: str):
    catalog.update_plan(current_principal(), plan_id, **_plan_values())
    return forms.back(PLANS, "Plan saved.")


@bp.post("/plans/<plan_id>/active")
@admin_required
@forms.rerender_on_error(_plans_page, "plan-{plan_id}", keep_form=False)
def activate_plan(plan_id: str):
    active = forms.checked("active")
    catalog.update_plan(current_principal(), plan_id, active=active)
    return forms.back(PLANS, "Plan offered again." if active
                      else "Plan deactivated: no new instance can use it.")


@bp.post("/plans/<plan_id>/delete")
@admin_required
@forms.rerender_on_error(_plans_page, "plan-{plan_id}", keep_form=False)
def delete_plan(plan_id: str):
    catalog.delete_plan(current_principal(), plan_id)
    return forms.back(PLANS, "Plan deleted.")


# Images -------------------------------------------------------------------------------


def _images_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    return _page("admin/images.html", status, engines=nodes.ENGINES,
                 images=forms.every_page(catalog.list_images, principal, True),
                 node_names={node.id: node.name
                             for node in forms.every_page(nodes.list_nodes, principal)},
                 **context)


@bp.get("/images")
@admin_required
def image_list():
    return _images_page()


def _image_values() -> dict:
    return {"family": forms.text("family", max_length=catalog.LABEL_MAX, required=False),
            "version": forms.text("version", max_length=catalog.LABEL_MAX, required=False),
            "min_disk_gb": _number("min_disk_gb", most=catalog.IMAGE_DISK_MAX),
            "default_user": forms.text("default_user", max_length=catalog.LABEL_MAX),
            "description": forms.text("description", max_length=catalog.DESCRIPTION_MAX,
                                      required=False)}


IMAGES = "admin_catalog.image_list"


@bp.post("/images")
@admin_required
@forms.rerender_on_error(_images_page, "register")
def register_image():
    catalog.register_image(current_principal(), request.form.get("engine", ""),
                           forms.text("ref", max_length=catalog.REF_MAX),
                           forms.text("name", max_length=catalog.NAME_MAX),
                           active=forms.checked("active"), **_image_values())
    return forms.back(IMAGES, "Image registered.")


@bp.post("/images/<image_id>/edit")
@admin_required
@forms.rerender_on_error(_images_page, "image-{image_id}")
def edit_image(image_id: str):
    catalog.update_image(current_principal(), image_id,
                         name=forms.text("name", max_length=catalog.NAME_MAX),
                         **_image_values())
    return forms.back(IMAGES, "Image saved.")


@bp.post("/images/<image_id>/active")
@admin_required
@forms.rerender_on_error(_images_page, "image-{image_id}", keep_form=False)
def activate_image(image_id: str):
    active = forms.checked("active")
    catalog.update_image(current_principal(), image_id, active=active)
    return forms.back(IMAGES, "Image offered again." if active
                      else "Image deactivated: no new instance uses it.")


@bp.post("/images/<image_id>/delete")
@admin_required
@forms.rerender_on_error(_images_page, "image-{image_id}", keep_form=False)
def delete_image(image_id: str):
    catalog.delete_image(current_principal(), image_id)
    return forms.back(IMAGES, "Image deleted.")


# One-click apps -----------------------------------------------------------------------


def _apps_page(status: int = 200, fragment: str | None = None, **context):
    principal = current_principal()
    return _page("admin/apps.html", status,
                 apps=forms.every_page(catalog.list_apps, principal, True),
                 images=forms.every_page(catalog.list_images, principal, True),
                 env_of=lambda app: json.loads(app.env or "{}"), **context)


@bp.get("/apps")
@admin_required
def app_list():
    return _apps_page()


def _app_values() -> dict:
    return {"name": forms.text("name", max_length=catalog.NAME_MAX),
            "description": forms.text("description", max_length=catalog.DESCRIPTION_MAX,
                                      required=False),
            "env": forms.pairs("env", max_lines=catalog.ENV_MAX),
            "min_vcpus": _number("min_vcpus"), "min_memory_mb": _number("min_memory_mb"),
            "min_disk_gb": _number("min_disk_gb")}


APPS = "admin_catalog.app_list"


@bp.post("/apps")
@admin_required
@forms.rerender_on_error(_apps_page, "create")
def create_app():
    catalog.create_app(current_principal(), forms.text("slug", max_length=catalog.SLUG_MAX),
                       request.form.get("image_id", ""), active=forms.checked("active"),
                       **_app_values())
    return forms.back(APPS, "App added.")


@bp.post("/apps/<slug>/edit")
@admin_required
@forms.rerender_on_error(_apps_page, "app-{slug}")
def edit_app(slug: str):
    catalog.update_app(current_principal(), slug, active=forms.checked("active"),
                       **_app_values())
    return forms.back(APPS, "App saved.")


@bp.post("/apps/<slug>/delete")
@admin_required
@forms.rerender_on_error(_apps_page, "app-{slug}", keep_form=False)
def delete_app(slug: str):
    catalog.delete_app(current_principal(), slug)
    return forms.back(APPS, "App deleted.")
