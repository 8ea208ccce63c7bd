"""Admin pages for what instances are made from and where they run: nodes, plans,
images and one-click apps.

The services (services/instances/catalog.py, services/instances/nodes.py) check the
administrator and every
rule; a view here parses the form - numbers, money in the display currency, key=value
lines - calls the one service function the JSON API calls, and redirects with a notice,
or re-renders the page with the service's error next to the field it names.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, InvalidRequest
from appliance.services.instances import catalog, nodes
from appliance.web.instances import display_currency
from appliance.web.projects import every_page
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_catalog", __name__, url_prefix="/admin")

NUMBER_MAX = 1_000_000  # as the JSON API's schema allows


# Parsing the forms --------------------------------------------------------------------


def _text(name: str, *, max_length: int, required: bool = True) -> str:
    """A trimmed text field; 400 naming it when empty (if required) or too long."""
    value = request.form.get(name, "").strip()
    if required and not value:
        raise InvalidRequest("This cannot be empty.", field=name)
    if len(value) > max_length:
        raise InvalidRequest(f"At most {max_length} characters.", field=name)
    return value


def _number(name: str, *, least: int = 1) -> int:
    raw = request.form.get(name, "").strip()
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest("Enter a whole number.", field=name) from None
    if not least <= value <= NUMBER_MAX:
        raise InvalidRequest(f"Enter a whole number from {least} to {NUMBER_MAX}.", field=name)
    return value


def _money(name: str) -> int:
    """An amount in the display currency ("0.05") as integer minor units (5)."""
    raw = request.form.get(name, "").strip().replace(",", ".")
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0 or amount != amount.quantize(
            Decimal("0.01")) or amount > 10**10:
        raise InvalidRequest(f"Enter an amount in {display_currency()} like 0.05 (at most two "
                             "decimals).", field=name)
    return int(amount * 100)


def _pairs(name: str) -> dict[str, str]:
    """KEY=value lines (blank lines and # comments skipped) as a dict."""
    pairs: dict[str, str] = {}
    for number, raw in enumerate(request.form.get(name, "").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidRequest(f"Line {number} is not KEY=value.", field=name)
        pairs[key] = value.strip()
    if len(pairs) > 100:
        raise InvalidRequest("At most 100 lines.", field=name)
    return pairs


def _checked(name: str) -> bool:
    return request.form.get(name) in ("on", "1", "true")


# Rendering ----------------------------------------------------------------------------


def _page(template: str, status: int = 200, **context):
    context.setdefault("form", {})
    context.setdefault("section", None)
    context.setdefault("notice", request.args.get("notice"))
    return render_template(template, amount=_amount, **context), status


def _amount(minor: int) -> str:
    """Minor units as the amount an admin types back into a form ("0.05")."""
    return f"{Decimal(minor) / 100:.2f}"


def _act(page: Callable, action: Callable[[], object], notice: str, endpoint: str,
         section: str, *, keep_form: bool = True):
    """Run a service call; redirect with the notice, or re-render with the error."""
    try:
        action()
    except ApplianceError as exc:
        return page(exc.status, error=exc, error_field=exc.details.get("field"),
                    section=section, form=request.form if keep_form else {})
    return redirect(url_for(endpoint, notice=notice))


# Nodes --------------------------------------------------------------------------------


def _nodes_page(status: int = 200, **context):
    rows = every_page(nodes.list_nodes, current_principal())
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


@bp.post("/nodes")
@admin_required
def register_node():
    def register():
        nodes.register_node(current_principal(), _text("name", max_length=100),
                            request.form.get("engine", ""),
                            request.form.get("endpoint", "").strip(), capacity=_capacity(),
                            options=_pairs("options"), enabled=_checked("enabled"))

    return _act(_nodes_page, register, "Node registered and checked.",
                "admin_catalog.node_list", "register")


@bp.post("/nodes/<node_id>/edit")
@admin_required
def edit_node(node_id: str):
    return _act(_nodes_page, lambda: nodes.update_node(
        current_principal(), node_id, name=_text("name", max_length=100),
        capacity=_capacity()), "Node saved.", "admin_catalog.node_list",
        f"node-{node_id}")


@bp.post("/nodes/<node_id>/enabled")
@admin_required
def enable_node(node_id: str):
    enabled = _checked("enabled")
    return _act(_nodes_page, lambda: nodes.update_node(current_principal(), node_id,
                                                       enabled=enabled),
                "Node enabled: new instances may be placed on it." if enabled else
                "Node disabled: no new instance is placed on it.", "admin_catalog.node_list",
                f"node-{node_id}", keep_form=False)


@bp.post("/nodes/<node_id>/check")
@admin_required
def check_node(node_id: str):
    try:
        node = nodes.check_health(nodes.get_node(current_principal(), node_id))
    except ApplianceError as exc:
        return _nodes_page(exc.status, error=exc, section=f"node-{node_id}")
    notice = f"{node.name} is {node.health}."
    return redirect(url_for("admin_catalog.node_list", notice=notice))


@bp.post("/nodes/<node_id>/delete")
@admin_required
def delete_node(node_id: str):
    return _act(_nodes_page, lambda: nodes.delete_node(current_principal(), node_id),
                "Node removed.", "admin_catalog.node_list", f"node-{node_id}", keep_form=False)


# Plans --------------------------------------------------------------------------------


def _plans_page(status: int = 200, **context):
    return _page("admin/plans.html", status,
                 plans=every_page(catalog.list_plans, current_principal(), True), **context)


@bp.get("/plans")
@admin_required
def plan_list():
    return _plans_page()


def _plan_values() -> dict:
    return {"name": _text("name", max_length=100), "vcpus": _number("vcpus"),
            "memory_mb": _number("memory_mb"), "disk_gb": _number("disk_gb"),
            "price_hourly": _money("price_hourly"),
            "price_monthly_cap": _money("price_monthly_cap")}


@bp.post("/plans")
@admin_required
def create_plan():
    return _act(_plans_page, lambda: catalog.create_plan(
        current_principal(), _text("slug", max_length=60),
        active=_checked("active"), **_plan_values()), "Plan added.",
        "admin_catalog.plan_list", "create")


@bp.post("/plans/<plan_id>/edit")
@admin_required
def edit_plan(plan_id: str):
    return _act(_plans_page, lambda: catalog.update_plan(
        current_principal(), plan_id, **_plan_values()), "Plan saved.",
        "admin_catalog.plan_list", f"plan-{plan_id}")


@bp.post("/plans/<plan_id>/active")
@admin_required
def activate_plan(plan_id: str):
    active = _checked("active")
    return _act(_plans_page, lambda: catalog.update_plan(
        current_principal(), plan_id, active=active),
        "Plan offered again." if active else "Plan deactivated: no new instance can use it.",
        "admin_catalog.plan_list", f"plan-{plan_id}", keep_form=False)


@bp.post("/plans/<plan_id>/delete")
@admin_required
def delete_plan(plan_id: str):
    return _act(_plans_page, lambda: catalog.delete_plan(current_principal(), plan_id),
                "Plan deleted.", "admin_catalog.plan_list", f"plan-{plan_id}",
                keep_form=False)


# Images -------------------------------------------------------------------------------


def _images_page(status: int = 200, **context):
    principal = current_principal()
    return _page("admin/images.html", status, engines=nodes.ENGINES,
                 images=every_page(catalog.list_images, principal, True),
                 node_names={node.id: node.name for node in every_page(nodes.list_nodes,
                                                                       principal)},
                 **context)


@bp.get("/images")
@admin_required
def image_list():
    return _images_page()


def _image_values() -> dict:
    return {"family": _text("family", max_length=60, required=False),
            "version": _text("version", max_length=60, required=False),
            "min_disk_gb": _number("min_disk_gb"),
            "default_user": _text("default_user", max_length=60),
            "description": _text("description", max_length=2000, required=False)}


@bp.post("/images")
@admin_required
def register_image():
    return _act(_images_page, lambda: catalog.register_image(
        current_principal(), request.form.get("engine", ""), _text("ref", max_length=300),
        _text("name", max_length=100), active=_checked("active"),
        **_image_values()), "Image registered.", "admin_catalog.image_list", "register")


@bp.post("/images/<image_id>/edit")
@admin_required
def edit_image(image_id: str):
    return _act(_images_page, lambda: catalog.update_image(
        current_principal(), image_id, name=_text("name", max_length=100),
        **_image_values()), "Image saved.", "admin_catalog.image_list", f"image-{image_id}")


@bp.post("/images/<image_id>/active")
@admin_required
def activate_image(image_id: str):
    active = _checked("active")
    return _act(_images_page, lambda: catalog.update_image(
        current_principal(), image_id, active=active),
        "Image offered again." if active else "Image deactivated: no new instance uses it.",
        "admin_catalog.image_list", f"image-{image_id}", keep_form=False)


@bp.post("/images/<image_id>/delete")
@admin_required
def delete_image(image_id: str):
    return _act(_images_page, lambda: catalog.delete_image(current_principal(), image_id),
                "Image deleted.", "admin_catalog.image_list", f"image-{image_id}",
                keep_form=False)


# One-click apps -----------------------------------------------------------------------


def _apps_page(status: int = 200, **context):
    principal = current_principal()
    return _page("admin/apps.html", status,
                 apps=every_page(catalog.list_apps, principal, True),
                 images=every_page(catalog.list_images, principal, True),
                 env_of=lambda app: json.loads(app.env or "{}"), **context)


@bp.get("/apps")
@admin_required
def app_list():
    return _apps_page()


def _app_values() -> dict:
    return {"name": _text("name", max_length=100),
            "description": _text("description", max_length=2000, required=False),
            "env": _pairs("env"), "min_vcpus": _number("min_vcpus"),
            "min_memory_mb": _number("min_memory_mb"), "min_disk_gb": _number("min_disk_gb")}


@bp.post("/apps")
@admin_required
def create_app():
    return _act(_apps_page, lambda: catalog.create_app(
        current_principal(), _text("slug", max_length=60), request.form.get("image_id", ""),
        active=_checked("active"), **_app_values()), "App added.",
        "admin_catalog.app_list", "create")


@bp.post("/apps/<slug>/edit")
@admin_required
def edit_app(slug: str):
    return _act(_apps_page, lambda: catalog.update_app(
        current_principal(), slug, active=_checked("active"),
        **_app_values()), "App saved.", "admin_catalog.app_list", f"app-{slug}")


@bp.post("/apps/<slug>/delete")
@admin_required
def delete_app(slug: str):
    return _act(_apps_page, lambda: catalog.delete_app(current_principal(), slug),
                "App deleted.", "admin_catalog.app_list", f"app-{slug}", keep_form=False)
