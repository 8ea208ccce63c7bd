"""Dashboard pages for administrators: every account's instances and one node's.

The list finds instances across every project (services/instances/operator.py) and
shows each with its owner and node; its actions are the owner's power actions and delete
(with the name typed back), done as the administrator. A node's page shows its health,
what is allocated on it against its capacity, and the instances it runs. Every post
redirects back to the list it came from, filters kept.
"""

from __future__ import annotations

from flask import Blueprint, request, url_for

from appliance.errors import InvalidRequest
from appliance.services.instances import lifecycle, nodes, operator
from appliance.web import forms, instance_metrics
from appliance.web.session import admin_required, current_principal

bp = Blueprint("admin_instances", __name__, url_prefix="/admin")

# The list's filters as they appear in its address (and are carried through a post).
FILTER_ARGS = ("q", "node", "engine", "state", "owner", "project", "suspended")
PER_PAGE = 50
# An action in the list: (action, label, question asked first or None).
POWER_LABELS = (("start", "Start", None),
                ("shutdown", "Shut down", None),
                ("reboot", "Reboot", None),
                ("stop", "Stop", "Stop now, like pulling the plug? Unsaved data is lost."),
                ("reset", "Reset", "Reset now, like pressing the reset button? Unsaved data "
                                   "is lost."))


def _filter_args() -> dict[str, str]:
    return {name: request.args[name] for name in FILTER_ARGS if request.args.get(name)}


def _filters(args: dict[str, str], node_id: str | None = None) -> operator.Filters:
    suspended = {"yes": True, "no": False}.get(args.get("suspended", ""))
    if args.get("suspended") and suspended is None:
        raise InvalidRequest("suspended is yes or no.", field="suspended")
    return operator.Filters(q=args.get("q", ""), node_id=node_id or args.get("node"),
                            engine=args.get("engine"), state=args.get("state"),
                            owner_id=args.get("owner"), project_id=args.get("project"),
                            suspended=suspended)


def _rows(filters: operator.Filters, endpoint: str, **url_values: str) -> dict:
    """One page of the list, and the address of the next one (None on the last)."""
    cursor = request.args.get("cursor") or None
    rows, next_cursor = operator.search(current_principal(), filters, PER_PAGE, cursor)
    return {"rows": rows, "jobs": lifecycle.current_jobs([row.id for row in rows]),
            "next_url": url_for(endpoint, cursor=next_cursor, **url_values)
            if next_cursor else None,
            "power_actions": lifecycle.POWER_ACTIONS, "power_labels": POWER_LABELS}


def _list_page(status: int = 200, fragment: str | None = None, **context):
    args = _filter_args()
    context.setdefault("notice", request.args.get("notice"))
    return forms.render_fragment_or_page(
        "admin/instances.html", "admin/_instances_table.html", status,
        args=args, nodes=forms.every_page(nodes.list_nodes, current_principal()),
        engines=nodes.ENGINES, states=operator.STATES,
        everyone_args={name: value for name, value in args.items()
                       if name not in ("owner", "project")},
        **_rows(_filters(args), "admin_instances.index", **args), **context)


def _node_page(node_id: str, status: int = 200, fragment: str | None = None, **context):
    found = nodes.get_node(current_principal(), node_id)
    args = {name: value for name, value in _filter_args().items() if name != "node"}
    context.setdefault("notice", request.args.get("notice"))
    return forms.render_fragment_or_page(
        "admin/node.html", "admin/_instances_table.html", status, node=found,
        used=nodes.used_capacity(found), free=nodes.free_capacity(found),
        allotted=nodes.allotted_capacity(found),
        live=nodes.live_instances(found), args=args,
        **instance_metrics.node_context(found.id, request.args.get("metrics_window")),
        **_rows(_filters(args, node_id=found.id), "admin_instances.node", node_id=found.id,
                **args), **context)


def _action_page(instance_id: str, action: str = "", status: int = 200,
                 fragment: str | None = None, **context):
    """The page an action was posted from, shown again with its error."""
    node_id = request.args.get("from_node")
    if node_id:
        return _node_page(node_id, status, fragment, **context)
    return _list_page(status, fragment, **context)


@bp.get("/instances")
@admin_required
def index():
    return _list_page()


def _back(notice: str):
    """To the list the post came from: the same filters, or the node's page."""
    args = _filter_args()
    node_page = request.args.get("from_node")
    if node_page:
        return forms.back("admin_instances.node", notice, node_id=node_page, **args)
    return forms.back("admin_instances.index", notice, **args)


@bp.post("/instances/<instance_id>/power/<action>")
@admin_required
@forms.rerender_on_error(_action_page, "instance-{instance_id}", keep_form=False)
def power(instance_id: str, action: str):
    started = operator.power(current_principal(), instance_id, action)
    return _back(f"{started.instance.name}: {started.job.message.lower()}\u2026")


@bp.post("/instances/<instance_id>/delete")
@admin_required
@forms.rerender_on_error(_action_page, "instance-{instance_id}", keep_form=False)
def delete(instance_id: str):
    started = operator.delete(current_principal(), instance_id,
                              request.form.get("confirm_name", ""),
                              final_backup=forms.checked("final_backup"))
    return _back(f"Deleting {started.instance.name}.")


@bp.get("/nodes/<node_id>")
@admin_required
def node(node_id: str):
    return _node_page(node_id)
