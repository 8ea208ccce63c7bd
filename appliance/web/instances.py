"""Dashboard pages for instances: a project's list, the create form, one instance.

Every rule - roles, states, plans, images, quotas, one operation at a time - is the
service's (services/instances/lifecycle.py), called exactly as the JSON API calls it. A view here
parses the form, calls one service function and renders, or redirects after a change.

Live progress without custom JavaScript: the list and the instance's state card
re-poll themselves with htmx (`hx-trigger="every 2s"`) only while something is in
progress, so the last answer - nothing left to do - carries no trigger and polling stops.
Every form post redirects (post/redirect/get), so reloading a result page repeats
nothing. A generated password (create, reset, rebuild) is kept sealed by the service
until acknowledged; the post redirects to the instance's password page, whose GET shows
the waiting password (`Cache-Control: no-store`) and acknowledges it, so a reload shows
it no more.
"""

from __future__ import annotations

import functools
from itertools import groupby

from flask import Blueprint, make_response, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, InvalidRequest, NotFound, Unsupported
from appliance.services import money, projects
from appliance.services.accounts import ssh_keys
from appliance.services.billing import billing_state
from appliance.services.instances import (
    backup_requests,
    backup_tiers,
    backups,
    catalog,
    console,
    jobs,
    lifecycle,
    nodes,
    templates,
)
from appliance.services.limits import quotas
from appliance.web import forms, instance_metrics
from appliance.web.session import current_principal, login_required

bp = Blueprint("instances", __name__, url_prefix="/projects/<project_id>/instances")

# Statuses that end by themselves: the pages keep polling while an instance has one.
SETTLING = ("creating", "deleting")
QUOTA_RESOURCES = ("instances", "vcpus", "memory_mb")
EVENTS_PER_PAGE = 20
BACKUPS_SHOWN = 20  # the newest on the instance page; the project's Backups page has all
POLL_SECONDS = 2
# htmx stops polling when an answer has this status (the resource went away meanwhile).
STOP_POLLING = 286


# Formatting, for the templates --------------------------------------------------------


def display_currency() -> str:
    """Prices are integer minor units of the operator's billing currency (a setting)."""
    return billing_state.currency()


def money_text(minor: int) -> str:
    """Integer minor units as the amount with the currency's decimals and its code."""
    return money.format(minor, display_currency())


def memory(megabytes: int) -> str:
    """512 MB, 2 GB, 23.5 GB: whole GB where it is, else one decimal."""
    if megabytes < 1024:
        return f"{megabytes} MB"
    return f"{megabytes / 1024:.1f}".removesuffix(".0") + " GB"


JOB_LABELS = {"backup.create": "Backup", "backup.restore": "Restore"}


def job_label(job_type: str) -> str:
    """What a job is called on the pages: "Backup", "Restore", "Reboot", "Ssh key"..."""
    return JOB_LABELS.get(job_type) or job_type.rpartition(".")[2].replace("_", " ").capitalize()


def size(count: int | None) -> str:
    """Bytes as 950 B, 12.3 MB, 4.1 GB (powers of 1000, one decimal)."""
    if count is None:
        return "\u2013"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


@bp.app_context_processor
def _formatting() -> dict:
    return {"money": money_text, "memory": memory, "job_percent": jobs.percent_done,
            "currency": display_currency(), "size": size, "job_label": job_label}


def _polled(view):
    """A poll whose instance or project is gone (deleted, access removed) says so once and
    stops the polling, instead of failing every two seconds."""

    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except NotFound as exc:
            if not (request.args.get("poll") and request.headers.get("HX-Request")):
                raise
            return render_template("instances/_gone.html", error=exc), STOP_POLLING

    return wrapped


def _no_store(response):
    response = make_response(response)
    response.headers["Cache-Control"] = "no-store"
    return response


# The list -----------------------------------------------------------------------------


@bp.get("")
@login_required
@_polled
def index(project_id: str):
    principal = current_principal()
    cursor = request.args.get("cursor") or None
    rows, next_cursor = lifecycle.list_instances(principal, project_id, cursor=cursor)
    found = projects.access(principal, project_id)
    running = lifecycle.current_jobs([row.id for row in rows])
    busy = bool(running) or any(row.status in SETTLING for row in rows)
    return forms.render_fragment_or_page(
        "instances/index.html", "instances/_list.html", access=found, project=found.project,
        rows=rows, jobs=running, busy=busy, cursor=cursor, next_cursor=next_cursor,
        poll_seconds=POLL_SECONDS, notice=request.args.get("notice"))


# Creating -----------------------------------------------------------------------------


def _new_page(project_id: str, status: int = 200, fragment: str | None = None, **context):
    """The create form. On a first visit the cheapest active plan is chosen and, when the
    user has exactly one SSH key, that key is ticked."""
    principal = current_principal()
    found = projects.access(principal, project_id, projects.OPERATE)
    images = sorted(forms.every_page(catalog.list_images, principal, False),
                    key=lambda image: (image.engine, image.name))
    owner = found.project.created_by
    context.setdefault("form", {})
    plans = sorted(forms.every_page(catalog.list_plans, principal, False),
                   key=lambda plan: (plan.price_hourly, plan.vcpus, plan.memory_mb, plan.id))
    account_keys = forms.every_page(ssh_keys.list_keys, principal)
    kept, _ = backups.list_backups(principal, project_id, BACKUPS_SHOWN)
    saved, _ = templates.list_templates(principal, project_id, BACKUPS_SHOWN)
    return render_template(
        "instances/new.html", access=found, project=found.project, owner=owner,
        backups=[row for row in kept if row.status in backups.USABLE and row.archive],
        chosen_backup=request.args.get("backup_id", ""),
        templates=[row for row in saved if row.status == "available"],
        chosen_template=request.args.get("template_id", ""),
        plans=plans, default_plan=plans[0] if plans else None,
        images_by_engine=[(engine, list(group)) for engine, group
                          in groupby(images, key=lambda image: image.engine)],
        apps=forms.every_page(catalog.list_apps, principal, False),
        account_keys=account_keys,
        default_keys=[account_keys[0].id] if len(account_keys) == 1 else [],
        limits=[limit for limit in quotas.limits(owner)
                if limit.resource.name in QUOTA_RESOURCES], **context), status


@bp.get("/new")
@login_required
def new(project_id: str):
    return _new_page(project_id)


@bp.post("")
@login_required
@forms.rerender_on_error(_new_page)
def create(project_id: str):
    form = request.form
    kind, _, source = form.get("source", "").partition(":")
    password = form.get("password", "") if form.get("password_mode") == "set" else None
    started = lifecycle.create_instance(
        current_principal(), project_id, name=form.get("name", "").strip(),
        plan_id=form.get("plan_id", ""),
        image_id=source if kind == "image" and source else None,
        app_slug=source if kind == "app" and source else None,
        backup_id=source if kind == "backup" and source else None,
        template_id=source if kind == "template" and source else None,
        ssh_key_ids=form.getlist("ssh_key_ids"), password=password)
    instance = started.instance
    if started.password is None:
        return forms.back("instances.show", "Creating the instance.", project_id=project_id,
                          instance_id=instance.id)
    return _to_password_page(project_id, instance.id, "created")


def _to_password_page(project_id: str, instance_id: str, after: str):
    """The redirect after a post that generated a password (`after`: created, reset,
    rebuilt, revealed); the page it leads to shows the password once."""
    return redirect(url_for("instances.password", project_id=project_id,
                            instance_id=instance_id, after=after), 303)


@bp.get("/<instance_id>/password")
@login_required
def password(project_id: str, instance_id: str):
    """The waiting generated password, shown on this one answer and acknowledged as it
    is shown; a reload finds none and says so."""
    principal = current_principal()
    instance = lifecycle.get_instance(principal, project_id, instance_id, projects.OPERATE)
    pending = lifecycle.pending_password(principal, project_id, instance_id)
    if pending is not None:
        lifecycle.acknowledge_password(principal, project_id, instance_id)
    after = request.args.get("after", "")
    return _no_store(render_template("instances/password.html",
                                     project=projects.access(principal, project_id).project,
                                     instance=instance, password=pending,
                                     created=after == "created", after=after))


# One instance -------------------------------------------------------------------------


def _state_context(project_id: str, instance_id: str) -> dict:
    """What the state card needs: the instance, its running job or the last one."""
    principal = current_principal()
    instance = lifecycle.get_instance(principal, project_id, instance_id)
    found = projects.access(principal, project_id)
    job = lifecycle.current_jobs([instance.id]).get(instance.id)
    last = None
    if job is None:
        recent, _ = lifecycle.list_jobs(principal, project_id, instance.id, limit=1)
        last = recent[0] if recent else None
    return {"access": found, "project": found.project, "instance": instance, "job": job,
            "last_job": last, "busy": job is not None or instance.status in SETTLING,
            "power_actions": lifecycle.POWER_ACTIONS, "poll_seconds": POLL_SECONDS,
            "can_operate": found.at_least(projects.OPERATE)}


def _events_context(project_id: str, instance_id: str) -> dict:
    cursor = request.args.get("events_cursor") or None
    rows, next_cursor = lifecycle.list_events(current_principal(), project_id, instance_id,
                                              EVENTS_PER_PAGE, cursor)
    return {"events": rows, "events_cursor": cursor, "events_next": next_cursor}


def _console_context(project_id: str, instance_id: str) -> dict:
    try:
        text = lifecycle.console_log(current_principal(), project_id, instance_id)
    except Unsupported:
        return {"console": None, "console_problem": "Not available on this engine."}
    except ApplianceError as exc:  # e.g. 503: the engine did not answer
        return {"console": None, "console_problem": exc.message}
    return {"console": text, "console_problem": None}


def _backups_context(project_id: str, instance_id: str) -> dict:
    rows, more = backups.list_instance_backups(current_principal(), project_id, instance_id,
                                               BACKUPS_SHOWN)
    instance = lifecycle.get_instance(current_principal(), project_id, instance_id)
    try:
        driver = nodes.driver_for(instance.node)
        tiers_offered = bool(driver.capabilities().backups)
    except ApplianceError:
        tiers_offered = False
    return {"backups": rows, "more_backups": more is not None,
            "tiers": backup_tiers.offered() if tiers_offered else [],
            "tier_hours": backup_tiers.HOURS_PER_MONTH,
            "config_tier_hour": backup_tiers.tier_hour()}


PARTS = {"state": "instances/_state.html", "events": "instances/_events.html",
         "console": "instances/_console.html", "backups": "instances/_backups.html"}


def _instance_page(project_id: str, instance_id: str, status: int = 200,
                   fragment: str | None = None, **context):
    """The instance page, or one of its cards (PARTS) when htmx asks for it."""
    principal = current_principal()
    context = {**_state_context(project_id, instance_id), **context}
    context.setdefault("form", {})
    context.setdefault("section", None)
    part = fragment if fragment in PARTS and request.headers.get("HX-Request") else None
    if part in (None, "events"):
        context.update(_events_context(project_id, instance_id))
    if part in (None, "console"):
        context.update(_console_context(project_id, instance_id))
    if part in (None, "backups"):
        context.update(_backups_context(project_id, instance_id))
    if part is None:
        context.update(instance_metrics.instance_context(
            project_id, instance_id, request.args.get("metrics_window")))
    if part is None and context["can_operate"]:
        node = context["instance"].node
        context["console_supported"] = console.supported(context["instance"])
        context["console_idle_minutes"] = max(1, round(console.idle_timeout() / 60))
        context.update(
            plans=forms.every_page(catalog.list_plans, principal, False),
            images=[image for image in forms.every_page(catalog.list_images, principal, False)
                    if image.engine == node.engine and image.node_id in (None, node.id)],
            account_keys=forms.every_page(ssh_keys.list_keys, principal))
    response = forms.render_fragment_or_page("instances/show.html", PARTS.get(part), status,
                                       **context)
    if part == "state" and request.args.get("poll") and not context["busy"]:
        # The last poll of a finished job: the events and console cards refresh too.
        response.headers["HX-Trigger"] = "instance-settled"
    return response


@bp.get("/<instance_id>")
@login_required
@_polled
def show(project_id: str, instance_id: str):
    return _instance_page(project_id, instance_id, fragment=request.args.get("part"),
                          notice=request.args.get("notice"))


def _done(project_id: str, instance_id: str, notice: str, fragment: str | None = None):
    return forms.done(_instance_page, notice, "instances.show", fragment,
                      project_id=project_id, instance_id=instance_id)


@bp.post("/<instance_id>/power/<action>")
@login_required
@forms.rerender_on_error(_instance_page, "power", "state", keep_form=False)
def power(project_id: str, instance_id: str, action: str):
    started = lifecycle.power(current_principal(), project_id, instance_id, action)
    return _done(project_id, instance_id, f"{started.job.message}\u2026", "state")


@bp.post("/<instance_id>/rename")
@login_required
@forms.rerender_on_error(_instance_page, "rename")
def rename(project_id: str, instance_id: str):
    name = request.form.get("name", "").strip()
    lifecycle.rename(current_principal(), project_id, instance_id, name)
    return _done(project_id, instance_id, f"Renamed to {name}.")


@bp.post("/<instance_id>/resize")
@login_required
@forms.rerender_on_error(_instance_page, "resize", keep_form=False)
def resize(project_id: str, instance_id: str):
    lifecycle.resize(current_principal(), project_id, instance_id,
                     request.form.get("plan_id", ""))
    return _done(project_id, instance_id, "Resizing\u2026")


@bp.post("/<instance_id>/rebuild")
@login_required
@forms.rerender_on_error(_instance_page, "rebuild", keep_form=False)
def rebuild(project_id: str, instance_id: str):
    lifecycle.rebuild(current_principal(), project_id, instance_id,
                      request.form.get("image_id", ""))
    return _to_password_page(project_id, instance_id, "rebuilt")


@bp.post("/<instance_id>/reset-password")
@login_required
@forms.rerender_on_error(_instance_page, "password", keep_form=False)
def reset_password(project_id: str, instance_id: str):
    chosen = (request.form.get("password", "")
              if request.form.get("password_mode") == "set" else None)
    started = lifecycle.reset_password(current_principal(), project_id, instance_id, chosen)
    if started.password is None:
        return _done(project_id, instance_id, "Setting the new password\u2026")
    return _to_password_page(project_id, instance_id, "reset")


@bp.post("/<instance_id>/reveal-password")
@login_required
@forms.rerender_on_error(_instance_page, "password", keep_form=False)
def reveal_password(project_id: str, instance_id: str):
    if lifecycle.pending_password(current_principal(), project_id, instance_id) is None:
        return _done(project_id, instance_id, "No generated password is waiting.")
    return _to_password_page(project_id, instance_id, "revealed")


@bp.post("/<instance_id>/ssh-keys")
@login_required
@forms.rerender_on_error(_instance_page, "ssh-key")
def add_ssh_key(project_id: str, instance_id: str):
    principal = current_principal()
    pasted = request.form.get("public_key", "").strip()
    chosen = request.form.get("ssh_key_id", "")
    if not pasted and chosen:
        pasted = ssh_keys.get_key(principal, chosen).public_key
    if not pasted:
        raise InvalidRequest("Pick one of your keys or paste a public key.",
                             field="public_key")
    lifecycle.add_ssh_key(principal, project_id, instance_id, pasted)
    return _done(project_id, instance_id, "Adding the SSH key\u2026")


def _backups_done(project_id: str, instance_id: str, notice: str, job_started: bool = True):
    """The Backups card again (htmx) or a redirect; when a job started, the state card is
    told (HX-Trigger instance-changed) so it shows the job's progress and polls."""
    response = make_response(_done(project_id, instance_id, notice, "backups"))
    if job_started and request.headers.get("HX-Request"):
        response.headers["HX-Trigger"] = "instance-changed"
    return response


@bp.post("/<instance_id>/backups")
@login_required
@forms.rerender_on_error(_instance_page, "backup", "backups")
def back_up(project_id: str, instance_id: str):
    backup_requests.create_backup(current_principal(), project_id, instance_id,
                                  request.form.get("name", "").strip() or None)
    return _backups_done(project_id, instance_id, "Backing up\u2026")


@bp.post("/<instance_id>/backup-tier")
@login_required
@forms.rerender_on_error(_instance_page, "tier", "backups")
def backup_tier(project_id: str, instance_id: str):
    tier = request.form.get("tier", "")
    if tier not in backup_tiers.TIERS:
        raise InvalidRequest("Choose none, basic or extended.", field="tier")
    backup_tiers.set_tier(current_principal(), project_id, instance_id, tier)
    return _backups_done(project_id, instance_id, f"Backup tier: {tier}.", job_started=False)


@bp.post("/<instance_id>/backups/<backup_id>/restore")
@login_required
@forms.rerender_on_error(_instance_page, "restore-{backup_id}", "backups", keep_form=False)
def restore(project_id: str, instance_id: str, backup_id: str):
    principal = current_principal()
    instance = lifecycle.get_instance(principal, project_id, instance_id)
    # The typed name only confirms the click; whether it may be restored is the service's.
    if request.form.get("confirm_name", "").strip() != instance.name:
        raise InvalidRequest("Type the instance's name exactly to confirm.",
                             field="confirm_name")
    backup_requests.restore_backup(principal, project_id, instance_id, backup_id)
    return _backups_done(project_id, instance_id, f"Restoring {instance.name}\u2026")


@bp.post("/<instance_id>/backups/<backup_id>/template")
@login_required
@forms.rerender_on_error(_instance_page, "template-{backup_id}", "backups")
def save_template(project_id: str, instance_id: str, backup_id: str):
    accepted = templates.create_template(current_principal(), project_id, instance_id,
                                         backup_id, request.form.get("name", ""))
    return forms.back("templates.index", f"Saving the template {accepted.template.name}\u2026",
                      project_id=project_id)


@bp.post("/<instance_id>/backups/<backup_id>/delete")
@login_required
@forms.rerender_on_error(_instance_page, "backups", "backups", keep_form=False)
def delete_backup(project_id: str, instance_id: str, backup_id: str):
    backups.delete_backup(current_principal(), project_id, backup_id, instance_id)
    return _backups_done(project_id, instance_id, "Backup deleted.", job_started=False)


@bp.post("/<instance_id>/delete")
@login_required
@forms.rerender_on_error(_instance_page, "delete", keep_form=False)
def delete(project_id: str, instance_id: str):
    principal = current_principal()
    typed = request.form.get("confirm_name", "").strip()
    instance = lifecycle.get_instance(principal, project_id, instance_id)
    # The typed name only confirms the click; whether it may go is the service's.
    if typed != instance.name:
        raise InvalidRequest("Type the instance's name exactly to confirm.",
                             field="confirm_name")
    lifecycle.delete(principal, project_id, instance_id,
                     final_backup=bool(request.form.get("final_backup")))
    return forms.back("instances.index", f"Deleting {instance.name}.", project_id=project_id)
