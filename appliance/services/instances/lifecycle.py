"""Instances: create, list, power actions, resize, rebuild, rename, delete, passwords, keys.

Every change to a machine is a job (services/instances/jobs.py, handlers in engine_jobs.py): the
request is checked here - role, scope, state, plan, image, quota, capacity - and answered
202 with the job; the engine work happens on a worker. One unfinished job per instance
(a partial unique index): a second operation is 409 `operation_in_progress`.

States: creating -> running | stopped (as the engine reports) | failed; deleting ->
deleted. Power actions check the state first (409 `invalid_state`).
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from peewee import JOIN, IntegrityError, ModelSelect, SqliteDatabase

from appliance.db import database, writes_seen
from appliance.errors import Conflict, InvalidRequest, NotFound, PaymentRequired
from appliance.models import App, Image, Instance, InstanceEvent, Job, Node, Plan, Project, User
from appliance.models import SshKey as AccountSshKey
from appliance.services import audit, clock, pagination, projects, sealing
from appliance.services.accounts import ssh_keys, users
from appliance.services.billing import prepaid
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.instances import backups, catalog, jobs, nodes, templates
from appliance.services.limits import quotas
from appliance.services.principal import Principal

NAME_MAX = 64  # an instance name is its hostname
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
PASSWORD_MIN, PASSWORD_MAX = 8, 72
LIVE = ("creating", "running", "stopped", "failed", "deleting")
POWER_ACTIONS = {  # action: (states it may start from, job type, message)
    "start": (("stopped",), "instance.start", "Starting"),
    "stop": (("running",), "instance.stop", "Powering off"),
    "shutdown": (("running",), "instance.shutdown", "Shutting down"),
    "reboot": (("running",), "instance.reboot", "Rebooting"),
    "reset": (("running",), "instance.reset", "Resetting"),
}


@dataclass(frozen=True)
class Started:
    """An accepted operation: the instance, its job and, once, a generated password."""

    instance: Instance
    job: Job
    password: str | None = None


def engine_name(instance_id: str) -> str:
    """The name on the engine: derived from the id, so a re-run job finds what it made."""
    return "ins-" + instance_id.removeprefix("ins_")


def _generate_password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(20))


def _check_password(password: str | None) -> str | None:
    if password is None:
        return None
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise InvalidRequest(f"A password has {PASSWORD_MIN}-{PASSWORD_MAX} characters.",
                             field="password")
    if any(ch in password for ch in ":\n\r"):
        raise InvalidRequest("A password cannot contain ':' or line breaks.", field="password")
    return password


def _check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise InvalidRequest(f"A name is 1-{NAME_MAX} lowercase letters, digits and inner dashes, "
                             "like a hostname.", field="name")
    return name


def _name_free(project_id: str, name: str, except_id: str | None = None) -> None:
    query = Instance.select().where(Instance.project == project_id, Instance.name == name,
                                    Instance.deleted_at.is_null())
    if except_id:
        query = query.where(Instance.id != except_id)
    if query.exists():
        raise Conflict("An instance of this project already has this name.",
                       code="name_taken", details={"field": "name"})


def _account_keys(principal: Principal, ids: list[str]) -> list[str]:
    keys = []
    for key_id in ids:
        key = AccountSshKey.get_or_none(AccountSshKey.id == key_id,
                                        AccountSshKey.user == principal.user)
        if key is None:
            raise InvalidRequest(f"No SSH key {key_id} on your account.", field="ssh_key_ids")
        keys.append(key.public_key)
    return keys


def _event(instance: Instance | str, kind: str, message: str, job: Job | None = None) -> None:
    InstanceEvent.create(id=new_id("iev"), instance=instance, job=job, type=kind,
                         message=message, created_at=clock.now())
    outbox.instance_event(instance, kind, message, job)


def _enqueue(instance: Instance, job_type: str, principal: Principal, message: str,
             total_steps: int = 1, **params: Any) -> Job:
    try:
        with database.atomic():
            return jobs.enqueue(job_type, project_id=instance.project_id,
                                instance_id=instance.id, user_id=principal.user.id,
                                params=params, total_steps=total_steps, message=message)
    except IntegrityError:
        raise Conflict("Another operation on this instance is still running; wait for it.",
                       code="operation_in_progress") from None


def _owner(project: Project) -> User:
    return project.created_by


def _audit(principal: Principal, action: str, instance: Instance, **details: Any) -> None:
    """The audit row of a change to `instance`. An administrator acting as the operator
    is its actor, and the owner is named beside them (`owner_id`, `owner_email`)."""
    if principal.operator:
        owner = _owner(Project.get_by_id(instance.project_id))
        details.update(as_operator=True, owner_id=owner.id, owner_email=owner.email)
    audit.record(action, actor=principal.user, target_type="instance",
                 target_id=instance.id, ip=principal.ip, **details)


def _who(principal: Principal) -> str:
    """Who acted, as the instance's timeline tells its owner."""
    return f"{principal.user.email}, administrator" if principal.operator else principal.user.email


# Creating ----------------------------------------------------------------------------


def create_instance(principal: Principal, project_id: str, *, name: str, plan_id: str,
                    image_id: str | None = None, app_slug: str | None = None,
                    backup_id: str | None = None, template_id: str | None = None,
                    ssh_key_ids: list[str] | None = None,
                    password: str | None = None) -> Started:
    """Check everything, place it, and queue the creation (202). From an image, an app,
    a backup of the project or one of its templates (their archive is the new disk: on
    any node of its engine)."""
    principal.require_scope("instances:write")
    users.require_verified(principal.user)
    _check_name(name)
    password = _check_password(password)
    if [image_id, app_slug, backup_id, template_id].count(None) != 3:
        raise InvalidRequest("Give one of image_id, app_slug, backup_id and template_id.",
                             field="image_id")
    with database.atomic():
        found = projects.access(principal, project_id, projects.OPERATE)
        plan = _active_plan(plan_id)
        backup = template = None
        if backup_id is not None:
            backup = backups.usable(project_id, backup_id, field="backup_id")
            image, app = backups.source_image(backup), None
        elif template_id is not None:
            template = templates.usable(project_id, template_id)
            image, app = templates.source_image(template), None
        else:
            image, app = _source(image_id, app_slug)
            _meets(plan, image, app)
        keys = _account_keys(principal, ssh_key_ids or [])
        _name_free(project_id, name)
        owner = _owner(found.project)
        quotas.check(owner, "instances", 1)
        quotas.check(owner, "vcpus", plan.vcpus)
        quotas.check(owner, "memory_mb", plan.memory_mb)
        prepaid.require_can_provision(owner.id)
        node = nodes.place(plan, image, any_node=backup is not None or template is not None)
        if backup is not None:
            backups.check_target(backup, node, plan)
            backups.mark_in_use(backup)
        if template is not None:
            templates.check_target(template, node, plan)
        generated: str | None = None
        if password is None:
            password = generated = _generate_password()
        now = clock.now()
        instance = Instance.create(
            id=new_id("ins"), project=project_id, name=name, plan=plan, image=image,
            node=node, status="creating", ssh_keys=json.dumps(keys),
            password_sealed=sealing.seal(generated) if generated else None,
            created_by=principal.user, created_at=now, updated_at=now)
        job = jobs.enqueue("instance.create", project_id=project_id, instance_id=instance.id,
                           user_id=principal.user.id, total_steps=3, message="Queued",
                           params={"password": sealing.seal(password),
                                   "env": json.loads(app.env) if app else {},
                                   "backup_id": backup.id if backup else None,
                                   "template_id": template.id if template else None})
        _event(instance, "instance.created", f"Created by {_who(principal)}"
               + (f" from the backup {backup.name}" if backup else "")
               + (f" from the template {template.name}" if template else ""), job)
        _audit(principal, "instance.created", instance, project_id=project_id,
               plan=plan.slug, node=node.name)
    jobs.wake()
    return Started(instance, job, generated)


def _active_plan(plan_id: str) -> Plan:
    try:
        return catalog.get_plan(plan_id)
    except NotFound:
        raise InvalidRequest("No such active plan.", code="plan_not_found",
                             field="plan_id") from None


def _source(image_id: str | None, app_slug: str | None) -> tuple[Image, App | None]:
    if app_slug is not None:
        try:
            app = catalog.get_app(app_slug)
        except NotFound:
            raise InvalidRequest("No such app.", code="app_not_found", field="app_slug") from None
        return app.image, app
    if image_id is None:
        raise InvalidRequest("Give either image_id or app_slug.", field="image_id")
    try:
        return catalog.get_image(image_id), None
    except NotFound:
        raise InvalidRequest("No such active image.", code="image_not_found",
                             field="image_id") from None


def _meets(plan: Plan, image: Image, app: App | None) -> None:
    needs = {"disk_gb": image.min_disk_gb}
    if app is not None:
        needs = {"vcpus": app.min_vcpus, "memory_mb": app.min_memory_mb,
                 "disk_gb": max(app.min_disk_gb, image.min_disk_gb)}
    for resource, least in needs.items():
        if getattr(plan, resource) < least:
            raise InvalidRequest(f"This needs a plan with at least {least} {resource}.",
                                 code="plan_too_small", field="plan_id",
                                 details={"resource": resource, "minimum": least})


# Reading -----------------------------------------------------------------------------


def _query(project_id: str) -> ModelSelect[Instance]:
    return (Instance.select(Instance, Plan, Image, Node)
            .join(Plan, on=(Instance.plan == Plan.id))
            .switch(Instance).join(Image, on=(Instance.image == Image.id))
            .switch(Instance).join(Node, on=(Instance.node == Node.id))
            .where(Instance.project == project_id))


def list_instances(principal: Principal, project_id: str, limit: int = 50,
                   cursor: str | None = None,
                   include_deleted: bool = False) -> pagination.Page[Instance]:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    return _page(project_id, limit, cursor, include_deleted)


def _page(project_id: str, limit: int, cursor: str | None,
          include_deleted: bool) -> pagination.Page[Instance]:
    query = _query(project_id)
    if not include_deleted:
        query = query.where(Instance.deleted_at.is_null())
    return pagination.page(query, Instance, limit, cursor)


Render = Callable[[list[Instance], dict[str, Job], int, str | None], bytes]


def list_rendered(principal: Principal, project_id: str, limit: int,  # noqa: PLR0917
                  cursor: str | None, include_deleted: bool, render: Render) -> bytes:
    """One page of the list as `render(rows, their running jobs, limit, next cursor)`
    made it.

    A page is kept under the project's listing version (migration 0005: triggers raise
    it on every change to its instances, their jobs and the catalog rows shown) and
    served again while the version stands. The version is read before the rows, so a
    page is never older than the version it is kept under. Reading the version is
    itself skipped while this process has written nothing since it was last read (the
    database's write count, db.CountingSqliteDatabase) and it was read less than
    EXTERNAL_WRITES_SEEN_WITHIN s ago: what another process writes (the command line, a
    sqlite3 shell) shows within that time, what this one writes at once.
    """
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    key = (project_id, limit, cursor, include_deleted, render)
    writes = writes_seen()  # before the version: a write after this is seen next time
    cached = _pages.get(key)
    if (cached is not None and writes is not None and cached.writes == writes
            and time.monotonic() - cached.checked < EXTERNAL_WRITES_SEEN_WITHIN):
        return cached.body
    version = listing_version(project_id)
    if cached is not None and cached.version == version:
        with _pages_lock:
            _pages[key] = cached._replace(writes=writes, checked=time.monotonic())
        return cached.body
    rows, next_cursor = _page(project_id, limit, cursor, include_deleted)
    body = render(rows, current_jobs([row.id for row in rows]), limit, next_cursor)
    if version is not None:
        with _pages_lock:
            _pages[key] = _Page(version, writes, time.monotonic(), body)
            _pages.move_to_end(key)
            if len(_pages) > MAX_CACHED_PAGES:
                _pages.popitem(last=False)
    return body


class _Page(NamedTuple):
    version: int  # the project's listing version the page was made under
    writes: int | None  # the database's write count when the version was last read
    checked: float  # when the version was last read (time.monotonic)
    body: bytes


MAX_CACHED_PAGES = 256
EXTERNAL_WRITES_SEEN_WITHIN = 1.0
_pages: OrderedDict[tuple, _Page] = OrderedDict()
_pages_lock = threading.Lock()


def listing_version(project_id: str) -> int | None:
    """The project's listing version; None where the database keeps none (not SQLite)."""
    if not isinstance(database.obj, SqliteDatabase):
        return None
    row = database.execute_sql('SELECT "version" FROM "listing_version" '
                               'WHERE "project_id" = ?', (project_id,)).fetchone()
    return row[0] if row else 0


def forget_rendered_lists() -> None:
    """Drop the instance lists kept under their listing version."""
    with _pages_lock:
        _pages.clear()


def get_instance(principal: Principal, project_id: str, instance_id: str,
                 least: str = projects.READ) -> Instance:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, least)
    instance = _query(project_id).where(Instance.id == instance_id).first()
    if instance is None or instance.status == "deleted":
        raise NotFound("No such instance.", code="instance_not_found")
    return instance


def current_jobs(instance_ids: list[str]) -> dict[str, Job]:
    """The unfinished job of each instance that has one."""
    if not instance_ids:
        return {}
    rows = Job.select().where(Job.instance.in_(instance_ids), Job.status.in_(jobs.UNFINISHED))
    return {job.instance_id: job for job in rows}


def list_events(principal: Principal, project_id: str, instance_id: str, limit: int = 50,
                cursor: str | None = None) -> pagination.Page[InstanceEvent]:
    instance = get_instance(principal, project_id, instance_id)
    return pagination.page(InstanceEvent.select().where(InstanceEvent.instance == instance),
                           InstanceEvent, limit, cursor)


def list_jobs(principal: Principal, project_id: str, instance_id: str | None = None,
              limit: int = 50, cursor: str | None = None) -> pagination.Page[Job]:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    query = Job.select().where(Job.project == project_id)
    if instance_id:
        query = query.where(Job.instance == instance_id)
    return pagination.page(query, Job, limit, cursor)


def get_job(principal: Principal, project_id: str, job_id: str) -> Job:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    job = Job.get_or_none(Job.id == job_id, Job.project == project_id)
    if job is None:
        raise NotFound("No such job.", code="job_not_found")
    return job


def console_log(principal: Principal, project_id: str, instance_id: str,
                lines: int = 200) -> str:
    instance = get_instance(principal, project_id, instance_id)
    if not instance.driver_ref:
        return ""
    driver = nodes.driver_for(instance.node)
    driver.capabilities().require("console")

    return nodes.engine_call(lambda: driver.logs(instance.driver_ref, lines))


# Changing ----------------------------------------------------------------------------


def _operable(principal: Principal, project_id: str, instance_id: str,
              scope: str = "instances:write") -> Instance:
    principal.require_scope(scope)
    instance = get_instance(principal, project_id, instance_id, projects.OPERATE)
    # Suspended for billing: stopped and kept; it may only be deleted until a top-up.
    if instance.suspended_at is not None and scope != "instances:delete":
        raise PaymentRequired("This instance is suspended for billing; top up to use it "
                              "again.", details={"reason": "suspended"})
    return instance


def _require_state(instance: Instance, allowed: tuple[str, ...], action: str) -> None:
    if instance.status not in allowed:
        raise Conflict(f"Cannot {action} an instance that is {instance.status}.",
                       code="invalid_state",
                       details={"status": instance.status, "allowed": list(allowed)})


def power(principal: Principal, project_id: str, instance_id: str, action: str) -> Started:
    if action not in POWER_ACTIONS:
        raise InvalidRequest(f"action is one of {', '.join(POWER_ACTIONS)}.", field="action")
    allowed, job_type, message = POWER_ACTIONS[action]
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _require_state(instance, allowed, action)
        job = _enqueue(instance, job_type, principal, message)
        _event(instance, f"instance.{action}_requested", f"{message} ({_who(principal)})",
               job)
        _audit(principal, f"instance.{action}", instance)
    jobs.wake()
    return Started(instance, job)


def rename(principal: Principal, project_id: str, instance_id: str, name: str) -> Instance:
    _check_name(name)
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _name_free(project_id, name, except_id=instance.id)
        Instance.update(name=name, updated_at=clock.now()).where(
            Instance.id == instance.id).execute()
        _event(instance, "instance.renamed", f"Renamed from {instance.name} to {name}")
        _audit(principal, "instance.renamed", instance, name=name)
    return get_instance(principal, project_id, instance_id)


def delete(principal: Principal, project_id: str, instance_id: str,
           final_backup: bool = False) -> Started:
    """Destroy it; with `final_backup`, first keep an archive of it
    (services/instances/backups.py)."""
    if final_backup:
        # Asked of the engine before the write transaction, which must not wait on it.
        instance = _deletable(principal, project_id, instance_id)
        principal.require_scope("backups:write")
        quotas.check(_owner(instance.project), "backups", 1)
        _require_backup_possible(instance)
    with database.atomic():
        instance = _deletable(principal, project_id, instance_id)
        params = {}
        if final_backup:
            quotas.check(_owner(instance.project), "backups", 1)
            params["backup_id"] = backups.begin_final(instance, principal).id
        job = _enqueue(instance, "instance.delete", principal, "Deleting",
                       total_steps=3 if final_backup else 2, **params)
        Instance.update(status="deleting", updated_at=clock.now()).where(
            Instance.id == instance.id).execute()
        _event(instance, "instance.delete_requested", f"Deleted by {_who(principal)}",
               job)
        _audit(principal, "instance.delete", instance)
    jobs.wake()
    return Started(get_instance(principal, project_id, instance_id), job)


def _deletable(principal: Principal, project_id: str, instance_id: str) -> Instance:
    instance = _operable(principal, project_id, instance_id, "instances:delete")
    _require_state(instance, ("running", "stopped", "failed"), "delete")
    return instance


def _require_backup_possible(instance: Instance) -> None:

    if not instance.driver_ref:
        raise Conflict("This instance was never made on its engine: there is nothing to "
                       "back up.", code="invalid_state", details={"status": instance.status})
    driver = nodes.driver_for(instance.node)
    nodes.engine_call(lambda: driver.capabilities().require("backups"))


def resize(principal: Principal, project_id: str, instance_id: str, plan_id: str) -> Started:
    """A plan whose disk is not smaller; live where the engine allows."""
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _require_state(instance, ("running", "stopped"), "resize")
        plan = _active_plan(plan_id)
        current = instance.plan
        if plan.disk_gb < current.disk_gb:
            raise InvalidRequest("The new plan's disk is smaller; disks cannot shrink.",
                                 code="disk_cannot_shrink", field="plan_id")
        if plan.id == current.id:
            raise InvalidRequest("The instance already has this plan.", field="plan_id")
        owner = _owner(Project.get_by_id(project_id))
        quotas.check(owner, "vcpus", max(0, plan.vcpus - current.vcpus))
        quotas.check(owner, "memory_mb", max(0, plan.memory_mb - current.memory_mb))
        prepaid.require_can_provision(owner.id)
        free = nodes.free_capacity(instance.node)
        if (free.vcpus < plan.vcpus - current.vcpus
                or free.memory_mb < plan.memory_mb - current.memory_mb
                or free.disk_gb < plan.disk_gb - current.disk_gb):
            raise Conflict("The instance's node has no room for this plan.",
                           code="no_capacity")
        job = _enqueue(instance, "instance.resize", principal, "Resizing", total_steps=3,
                       plan_id=plan.id)
        _event(instance, "instance.resize_requested", f"Resize to {plan.name}", job)
        _audit(principal, "instance.resize", instance, plan=plan.slug)
    jobs.wake()
    return Started(instance, job)


def rebuild(principal: Principal, project_id: str, instance_id: str, image_id: str) -> Started:
    """Reinstall from an image. The disk is erased, so the job sets a new generated
    password (returned here, shown once, kept sealed until acknowledged as on create) and
    puts the instance's SSH keys back."""
    generated = _generate_password()
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _require_state(instance, ("running", "stopped", "failed"), "rebuild")
        image, _ = _source(image_id, None)
        if image.engine != instance.node.engine or image.node_id not in (None,
                                                                         instance.node_id):
            raise InvalidRequest("This image is not available on the instance's node.",
                                 field="image_id")
        _meets(instance.plan, image, None)
        job = _enqueue(instance, "instance.rebuild", principal, "Rebuilding", total_steps=3,
                       image_id=image.id, password=sealing.seal(generated))
        # The old password goes with the old disk: what waits to be seen is the new one.
        Instance.update(password_sealed=sealing.seal(generated)).where(
            Instance.id == instance.id).execute()
        _event(instance, "instance.rebuild_requested", f"Rebuild from {image.name}", job)
        _audit(principal, "instance.rebuild", instance, image=image.id)
    jobs.wake()
    return Started(instance, job, generated)


def reset_password(principal: Principal, project_id: str, instance_id: str,
                   password: str | None = None) -> Started:
    """Set a new password (generated when not given; shown once)."""
    password = _check_password(password)
    generated: str | None = None
    if password is None:
        password = generated = _generate_password()
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _require_state(instance, ("running",), "reset the password of")
        job = _enqueue(instance, "instance.password", principal, "Setting the password",
                       password=sealing.seal(password))
        if generated:
            Instance.update(password_sealed=sealing.seal(generated)).where(
                Instance.id == instance.id).execute()
        _event(instance, "instance.password_reset", f"Password reset by {_who(principal)}",
               job)
        _audit(principal, "instance.password_reset", instance)
    jobs.wake()
    return Started(instance, job, generated)


def pending_password(principal: Principal, project_id: str, instance_id: str) -> str | None:
    """The generated password, until acknowledged (then None). A secret that gives root
    on the machine: it needs `instances:write` and the operate role, as changing it does."""
    principal.require_scope("instances:write")
    instance = get_instance(principal, project_id, instance_id, projects.OPERATE)
    return sealing.unseal(instance.password_sealed)


def acknowledge_password(principal: Principal, project_id: str, instance_id: str) -> None:
    """Forget the generated password (a write: `instances:write` and the operate role)."""
    principal.require_scope("instances:write")
    with database.atomic():
        instance = get_instance(principal, project_id, instance_id, projects.OPERATE)
        Instance.update(password_sealed=None).where(Instance.id == instance.id).execute()


def add_ssh_key(principal: Principal, project_id: str, instance_id: str,
                public_key: str) -> Started:
    parsed = ssh_keys.parse_public_key(public_key)
    with database.atomic():
        instance = _operable(principal, project_id, instance_id)
        _require_state(instance, ("running",), "add a key to")
        keys = json.loads(instance.ssh_keys or "[]")
        if parsed.openssh in keys:
            raise Conflict("The instance already has this key.", code="ssh_key_exists")
        job = _enqueue(instance, "instance.ssh_key", principal, "Adding the SSH key",
                       public_key=parsed.openssh)
        _event(instance, "instance.ssh_key_added", f"SSH key {parsed.fingerprint}", job)
        _audit(principal, "instance.ssh_key_added", instance, fingerprint=parsed.fingerprint)
    jobs.wake()
    return Started(instance, job)


# For the requests of backup_requests.py, which change instances the same way ------------


def changeable(principal: Principal, project_id: str, instance_id: str, *,
               allowed: tuple[str, ...], action: str, scope: str) -> Instance:
    """The instance an operation may start on: scope, role, billing and state checked."""
    instance = _operable(principal, project_id, instance_id, scope)
    _require_state(instance, allowed, action)
    return instance


def queue(instance: Instance, job_type: str, principal: Principal, message: str,
          total_steps: int = 1, **params: Any) -> Job:
    """Insert the instance's job (409 operation_in_progress while it has another)."""
    return _enqueue(instance, job_type, principal, message, total_steps, **params)


def record(instance: Instance, kind: str, message: str, job: Job | None = None) -> None:
    """A timeline entry of the instance (and its event, for the instance.* kinds)."""
    _event(instance, kind, message, job)


# For other services (registered by services/wiring.py) ----------------------------------


def _live_of_owner(user: User) -> ModelSelect[Instance]:
    return (Instance.select(Instance, Plan).join(Plan, on=(Instance.plan == Plan.id))
            .switch(Instance).join(Project, JOIN.INNER, on=(Instance.project == Project.id))
            .where(Project.created_by == user, Instance.deleted_at.is_null()))


def live_instance_count(user: User) -> int:
    """The quota usage of `instances`: the live instances of the user's projects."""
    return _live_of_owner(user).count()


def vcpus_in_use(user: User) -> int:
    return sum(i.plan.vcpus for i in _live_of_owner(user))


def memory_mb_in_use(user: User) -> int:
    return sum(i.plan.memory_mb for i in _live_of_owner(user))


def instances_in_project(project_id: str) -> tuple[int, str]:
    """What keeps a project from being deleted: its live instances."""
    return Instance.select().where(Instance.project == project_id,
                                   Instance.deleted_at.is_null()).count(), "instances"
