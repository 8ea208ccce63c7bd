"""Resource graphs on the dashboard: an instance's CPU, memory, network and disk (its
page) and a node's host load, memory, storage and instances (the admin node page), drawn
by web/charts.py as server-side SVG from `services.metrics.series`.

The card re-polls itself with htmx every sampling interval (at least POLL_MIN_SECONDS)
while the page is open, and when the live event stream says an instance changed (a
start or stop shows at once); the window links swap it for the chosen window. The card is one
htmx sync scope (`hx-sync="this:replace"` on the card, `closest section:replace` on its
links): a request in flight is aborted when a newer one starts, so a slow answer for the
old window never overwrites the new one. Without JavaScript the links are plain links
to the page and each graph has its numbers in a table.
"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from appliance.errors import NotFound
from appliance.services.metrics import series
from appliance.services.principal import Principal
from appliance.web import charts
from appliance.web.session import admin_required, current_principal, login_required

bp = Blueprint("instance_metrics", __name__)

CHART = charts.Size(360, 170, 12, 4)
WINDOW_CHOICES = (("1h", "1 hour"), ("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days"))
DEFAULT_WINDOW = "24h"
# Points few enough to draw and to list: 60, 96, 168 and 120.
BUCKET_OF_WINDOW = {"1h": "1m", "24h": "15m", "7d": "1h", "30d": "6h"}
POLL_MIN_SECONDS = 2
TABLE_ROWS = 48  # the newest buckets in the tables
STOP_POLLING = 286  # htmx stops polling on this status


def _signed_in() -> Principal:
    """The caller (the views are login_required / admin_required)."""
    principal = current_principal()
    if principal is None:  # pragma: no cover - the decorators sign the caller in first
        raise NotFound("Sign in first.")
    return principal


def window_of(value: str | None) -> str:
    """The window asked for, or the default (a page never 400s on it)."""
    return value if value in BUCKET_OF_WINDOW else DEFAULT_WINDOW


def size_text(value: float | None) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB, 240 MiB, 3.2 GiB."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" or amount >= 100 else \
                f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"  # pragma: no cover - the loop returns


def rate_text(value: float | None) -> str:
    return "-" if value is None else size_text(value) + "/s"


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} %"


def plain_text(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _x_label(window: str):
    if window in ("7d", "30d"):
        return lambda at: f"{at.day} {at:%b}"
    return lambda at: f"{at:%H:%M}"


def _last(values: list) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _graph(found: series.Series, graph_id: str, title: str, names: list[tuple[str, str]],
           text, *, top: float | None = None, note: str = "") -> dict:
    lines = [(label, found.line(name).values) for name, label in names]
    axis = (lambda v: f"{v:g}%") if text is percent_text else (
        (lambda v: size_text(v).replace(".0 ", " ")) if text in (size_text, rate_text)
        else (lambda v: f"{v:g}"))
    chart = charts.line_chart(found.times, lines, CHART, axis_label=axis,
                              x_label=_x_label(found.window), top=top,
                              binary=text in (size_text, rate_text))
    rows = [(at, [values[index] for _, values in lines])
            for index, at in enumerate(found.times)][-TABLE_ROWS:]
    return {"id": graph_id, "title": title, "chart": chart, "text": text,
            "labels": [label for label, _ in lines], "note": note,
            "now": [text(_last(values)) for _, values in lines],
            "rows": [row for row in reversed(rows) if any(v is not None for v in row[1])]}


def _common(found: series.Series, window: str) -> dict:
    return {"metrics_window": window, "metrics_windows": WINDOW_CHOICES,
            "metrics_window_label": dict(WINDOW_CHOICES)[window],
            "metrics_poll_seconds": max(found.interval_seconds, POLL_MIN_SECONDS),
            "metrics_bucket": found.bucket, "metrics_resolution": found.resolution,
            "metrics_when": lambda at: f"{at:%a} {at.day} {at:%b} {at:%H:%M}"}


def instance_context(project_id: str, instance_id: str, window: str | None) -> dict:
    """The template context of an instance's metrics card."""
    window = window_of(window)
    instance, found = series.instance_series(_signed_in(), project_id, instance_id,
                                             window=window, bucket=BUCKET_OF_WINDOW[window])
    plan = instance.plan
    memory, disk = plan.memory_mb * 2**20, plan.disk_gb * 2**30
    graphs = [
        _graph(found, "metric-cpu", "CPU", [("cpu", "CPU")], percent_text, top=100,
               note=f"of {plan.vcpus} vCPU{'s' if plan.vcpus != 1 else ''}"),
        _graph(found, "metric-memory", "Memory", [("memory", "Used")], size_text,
               top=memory, note=f"of {size_text(memory)}"),
        _graph(found, "metric-network", "Network", [("network_rx", "Received"),
                                                    ("network_tx", "Sent")], rate_text),
        _graph(found, "metric-disk", "Disk", [("disk", "Used")], size_text, top=disk,
               note=f"of {size_text(disk)}"),
    ]
    return {**_common(found, window), "metrics_graphs": graphs,
            "metrics_url": url_for("instance_metrics.instance_card", project_id=project_id,
                                   instance_id=instance_id, window=window),
            "metrics_page": lambda w: url_for("instances.show", project_id=project_id,
                                              instance_id=instance_id, metrics_window=w,
                                              _anchor="metrics"),
            "metrics_part": lambda w: url_for("instance_metrics.instance_card",
                                              project_id=project_id,
                                              instance_id=instance_id, window=w),
            "metrics_latest": found.latest_at,
            "metrics_api": f"/api/v1/projects/{project_id}/instances/{instance_id}/metrics"
                           f"?window={window}"}


def node_context(node_id: str, window: str | None) -> dict:
    """The template context of a node's metrics card (administrators)."""
    window = window_of(window)
    node, found = series.node_series(_signed_in(), node_id, window=window,
                                     bucket=BUCKET_OF_WINDOW[window])
    memory_total = _last(found.line("memory_total").values)
    storage_total = _last(found.line("storage_total").values)
    graphs = [
        _graph(found, "metric-load", "Host load", [("load", "1-minute load")], plain_text),
        _graph(found, "metric-host-memory", "Host memory", [("memory_used", "Used")],
               size_text, top=memory_total,
               note=f"of {size_text(memory_total)}" if memory_total else ""),
        _graph(found, "metric-storage", "Storage pool", [("storage_used", "Used")],
               size_text, top=storage_total,
               note=f"of {size_text(storage_total)}" if storage_total else ""),
        _graph(found, "metric-running", "Instances running", [("instances_running",
                                                               "Running")], plain_text),
    ]
    return {**_common(found, window), "metrics_graphs": graphs,
            "metrics_url": url_for("instance_metrics.node_card", node_id=node_id,
                                   window=window),
            "metrics_page": lambda w: url_for("admin_instances.node", node_id=node_id,
                                              metrics_window=w, _anchor="metrics"),
            "metrics_part": lambda w: url_for("instance_metrics.node_card", node_id=node_id,
                                              window=w),
            "metrics_latest": None, "node_measured": _measured(series.latest_of(node)),
            "metrics_api": f"/api/v1/admin/nodes/{node_id}/metrics?window={window}"}


def _measured(latest: series.Latest) -> dict:
    """The node's newest sample as text, beside what is allocated."""
    figures = latest.figures

    def of(used: str, total: str) -> str:
        if figures[used] is None:
            return "-"
        if figures[total]:
            return f"{size_text(figures[used])} of {size_text(figures[total])}"
        return size_text(figures[used])

    load = figures["load"]
    return {"at": latest.at, "load": "-" if load is None else f"{load / 100:.2f}",
            "memory": of("memory_used", "memory_total"),
            "storage": of("storage_used", "storage_total"),
            "running": "-" if figures["running"] is None else str(figures["running"])}


def _card(context: dict, page_url: str):
    if not request.headers.get("HX-Request"):
        return redirect(page_url)  # the card lives on its page
    return render_template("instances/_metrics.html", **context)


@bp.get("/projects/<project_id>/instances/<instance_id>/metrics")
@login_required
def instance_card(project_id: str, instance_id: str):
    try:
        context = instance_context(project_id, instance_id, request.args.get("window"))
    except NotFound as exc:
        if not request.headers.get("HX-Request"):
            raise
        # Gone meanwhile (deleted, access removed): say so once; htmx stops polling.
        return render_template("instances/_gone.html", error=exc), STOP_POLLING
    return _card(context, context["metrics_page"](context["metrics_window"]))


@bp.get("/admin/nodes/<node_id>/metrics")
@admin_required
def node_card(node_id: str):
    context = node_context(node_id, request.args.get("window"))
    return _card(context, context["metrics_page"](context["metrics_window"]))


