"""Templates: a project's own images, made from a backup of one of its instances.

A template is a row and a file: its own archive in the store's templates/ folder
(services/instances/store.py), a hard link to the backup's archive or a copy of it, with
its size and sha256. So it outlives the backup and the instance it came from; an
instance is made from it with the engine's `create_from_archive` on any node of its
engine (`POST .../instances` with `template_id`). It is private to its project: never in
the catalog, never offered to another project.

Statuses: creating (its job copies the archive) -> available | failed; available |
failed -> deleting -> deleted (the row stays, marked, for the bills). A template is
counted against the account's `template_storage_gb` limit while kept (KEPT) and metered
per GB-hour (BILLING_TEMPLATE_GB_MONTH). It cannot be deleted while a job makes an
instance from it (409 `template_in_use`).

This module holds the rows, the reading, the request that queues the job, the job's
steps, and the delete (no engine work: the archive is a file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from peewee import fn

from appliance.db import database
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.models import Backup, Image, Job, Node, Plan, Project, Template
from appliance.services import audit, clock, pagination, projects
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.instances import backups, jobs, nodes, store
from appliance.services.limits import quotas
from appliance.services.principal import Principal

SCOPE = "backups:write"
STATUSES = ("creating", "available", "failed", "deleting", "deleted")
KEPT = ("creating", "available", "deleting")  # counted and metered
NAME_MAX = 64
JOB_TYPE = "template.create"


@dataclass(frozen=True)
class Accepted:
    template: Template
    job: Job


def snapshot(template: Template) -> dict[str, Any]:
    """What events say of a template (ids, names, sizes, states)."""
    return {"id": template.id, "name": template.name, "status": template.status,
            "project_id": template.project_id,
            "source_instance_id": template.source_instance_id,
            "source_instance_name": template.source_instance_name,
            "source_backup_id": template.source_backup_id, "engine": template.node.engine,
            "size_bytes": template.size_bytes, "sha256": template.sha256,
            "created_at": clock.isoformat(template.created_at)}


def _emit(event_type: str, template_id: str, **extra: Any) -> None:
    template = Template.get_by_id(template_id)
    outbox.emit(event_type, project_id=template.project_id,
                data={"template": snapshot(template), **extra})


def check_name(name: str | None) -> str:
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidRequest(f"A template needs a name of at most {NAME_MAX} printable "
                             "characters.", field="name")
    return name


# Reading -----------------------------------------------------------------------------


def _rows(project_id: str) -> Any:
    return (Template.select(Template, Node).join(Node, on=(Template.node == Node.id))
            .where(Template.project == project_id, Template.deleted_at.is_null()))


def list_templates(principal: Principal, project_id: str, limit: int = 50,
                   cursor: str | None = None) -> pagination.Page[Template]:
    """A project's templates, newest first."""
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    return pagination.page(_rows(project_id), Template, limit, cursor)


def get_template(principal: Principal, project_id: str, template_id: str,
                 least: str = projects.READ) -> Template:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, least)
    template = _rows(project_id).where(Template.id == template_id).first()
    if template is None:
        raise NotFound("No such template.", code="template_not_found")
    return template


def _users(template_id: str) -> int:
    """Unfinished jobs that read the template's archive (instances made from it)."""
    return Job.select().where(Job.status.in_(jobs.UNFINISHED),
                              Job.params.contains(f'"template_id": "{template_id}"')).count()


def kept_gb(owner_id: str) -> int:
    """The template storage (GB) counted against the `template_storage_gb` limit."""
    return (Template.select(fn.COALESCE(fn.SUM(Template.size_gb), 0))
            .join(Project, on=(Template.project == Project.id))
            .where(Project.created_by == owner_id, Template.deleted_at.is_null(),
                   Template.status.in_(KEPT)).scalar())


def templates_in_project(project_id: str) -> tuple[int, str]:
    """What keeps a project from being deleted: its kept templates (they are billed)."""
    return Template.select().where(Template.project == project_id,
                                   Template.deleted_at.is_null()).count(), "templates"


# Making one ----------------------------------------------------------------------------


def _size_gb(size_bytes: int | None) -> int:
    return max(1, math.ceil((size_bytes or 0) / 2**30))


def create_template(principal: Principal, project_id: str, instance_id: str, backup_id: str,
                    name: str | None) -> Accepted:
    """Queue the making of a template from an available backup of the live instance
    (202). 403 `quota_exceeded` past `template_storage_gb`, before anything is copied."""
    principal.require_scope(SCOPE)
    label = check_name(name)
    with database.atomic():
        backup = backups.get_backup(principal, project_id, backup_id, projects.OPERATE,
                                    instance_id)
        backup = backups.usable(project_id, backup.id)
        image = backups.source_image(backup)
        size_gb = _size_gb(backup.size_bytes)
        quotas.check(backup.project.created_by, "template_storage_gb", size_gb)
        now = clock.now()
        template = Template.create(
            id=new_id("tpl"), project=project_id, name=label, status="creating",
            source_instance=backup.instance_id, source_instance_name=backup.instance_name,
            source_backup=backup.id, node=backup.node_id, size_gb=size_gb,
            disk_gb=backup.disk_gb, image=image, created_by=principal.user,
            created_at=now, updated_at=now)
        job = jobs.enqueue(JOB_TYPE, project_id=project_id, user_id=principal.user.id,
                           total_steps=2, message="Queued",
                           params={"template_id": template.id, "backup_id": backup.id})
        backups.mark_in_use(backup)
        audit.record("template.create", actor=principal.user, target_type="template",
                     target_id=template.id, ip=principal.ip, backup_id=backup.id)
    jobs.wake()
    return Accepted(get_template(principal, project_id, template.id), job)


def copy_archive(job: Job, progress: jobs.Progress) -> None:
    """template.create: the backup's archive (checked against its checksum) linked or
    copied into the templates/ folder; the template available (template.created). Run
    again after a crash, it makes the file anew; a template no longer creating is left."""
    params = json.loads(job.params)
    template = Template.get_by_id(params["template_id"])
    if template.status == "creating":
        progress(1, "Checking the backup's archive")
        with backups.verified_archive(params["backup_id"]):
            progress(2, "Copying the archive")
            source = Backup.get_by_id(params["backup_id"])
            written = store.copy(source.archive, store.name_for(template.id,
                                                                template.node.engine))
        with database.atomic():
            changed = Template.update(
                status="available", archive=written.name, size_bytes=written.size_bytes,
                sha256=written.sha256, size_gb=_size_gb(written.size_bytes), error=None,
                updated_at=clock.now()).where(Template.id == template.id,
                                              Template.status == "creating").execute()
            if changed:
                _emit("template.created", template.id, job_id=job.id)
    backups.release(params["backup_id"], job)


def copy_failed(job: Job, error: str) -> None:
    """The job failed: nothing of the archive stays; the template failed (template.failed)."""
    params = json.loads(job.params)
    mark_failed(params["template_id"], error, job)
    backups.release(params["backup_id"], job)


def mark_failed(template_id: str, error: str, job: Job | None = None) -> None:
    template = Template.get_by_id(template_id)
    try:
        store.remove(store.name_for(template.id, template.node.engine))
    except store.StoreError:
        pass  # the start-up check removes it
    with database.atomic():
        changed = Template.update(status="failed", error=error[:500], size_gb=0,
                                  updated_at=clock.now()).where(
            Template.id == template_id, Template.status == "creating").execute()
        if changed:
            _emit("template.failed", template_id, error=error[:500],
                  job_id=job.id if job is not None else None)


# Using one -----------------------------------------------------------------------------


def usable(project_id: str, template_id: str) -> Template:
    """An available template of the project (400 naming `template_id` otherwise)."""
    template = _rows(project_id).where(Template.id == template_id).first()
    if template is None:
        raise InvalidRequest("No such template in this project.", code="template_not_found",
                             field="template_id")
    if template.status != "available" or not template.archive:
        raise Conflict(f"This template cannot be used: it is {template.status}.",
                       code="invalid_state", details={"status": template.status,
                                                      "allowed": ["available"]})
    return template


def source_image(template: Template) -> Image:
    if template.image is None:
        raise Conflict("The image this template's instance was made from is gone from the "
                       "catalog.", code="image_not_found")
    return template.image


def check_target(template: Template, node: Node, plan: Plan) -> None:
    """Whether an instance of `plan` on `node` can be made from the template."""
    if template.node.engine != node.engine:
        raise Conflict(f"This template is of a {template.node.engine} instance; it can only "
                       f"go onto {template.node.engine}, not {node.engine}.",
                       code="engine_mismatch",
                       details={"template_engine": template.node.engine,
                                "engine": node.engine})
    if plan.disk_gb < template.disk_gb:
        raise InvalidRequest(f"This template is of a {template.disk_gb} GB disk; the plan "
                             f"has {plan.disk_gb} GB.", code="plan_too_small", field="plan_id",
                             details={"resource": "disk_gb", "minimum": template.disk_gb})
    driver = nodes.driver_for(node)
    nodes.engine_call(lambda: driver.capabilities().require("backups"))


@contextmanager
def verified_archive(template_id: str) -> Iterator[BinaryIO]:
    """The template's archive, open, once its checksum matches; a changed or missing one
    fails the template for good (and the caller's job with it)."""
    template = Template.get_by_id(template_id)
    found = store.checksum(template.archive)
    if found != template.sha256:
        message = "The template's archive no longer matches its checksum; it cannot be used."
        with database.atomic():
            Template.update(status="failed", error=message, size_gb=0,
                            updated_at=clock.now()).where(Template.id == template_id).execute()
            _emit("template.failed", template_id, error=message, job_id=None)
        raise Conflict(message, code="template_corrupt")
    with store.opened(template.archive) as handle:
        yield handle


# Changing and deleting -------------------------------------------------------------------


def rename_template(principal: Principal, project_id: str, template_id: str,
                    name: str | None) -> Template:
    principal.require_scope(SCOPE)
    label = check_name(name)
    with database.atomic():
        template = get_template(principal, project_id, template_id, projects.OPERATE)
        Template.update(name=label, updated_at=clock.now()).where(
            Template.id == template.id).execute()
        audit.record("template.rename", actor=principal.user, target_type="template",
                     target_id=template.id, ip=principal.ip, name=label)
    return get_template(principal, project_id, template_id)


def delete_template(principal: Principal, project_id: str, template_id: str) -> None:
    """Remove the archive, then mark the row deleted (template.deleted). 409 while it
    is being made or a job makes an instance from it. A crash between the two is
    finished by the start-up check."""
    principal.require_scope(SCOPE)
    with database.atomic():
        template = get_template(principal, project_id, template_id, projects.OPERATE)
        if template.status == "creating":
            raise Conflict("This template is still being made; wait for it.",
                           code="invalid_state", details={"status": template.status})
        if _users(template.id):
            raise Conflict("An instance is being created from this template; wait for it.",
                           code="template_in_use")
        Template.update(status="deleting", updated_at=clock.now()).where(
            Template.id == template.id).execute()
    finish_delete(template)
    with database.atomic():
        audit.record("template.delete", actor=principal.user, target_type="template",
                     target_id=template.id, ip=principal.ip)


def finish_delete(template: Template) -> None:
    """Remove the template's archive (and any part of it) and mark it deleted."""
    if template.archive:
        store.remove(template.archive)
    store.remove(store.name_for(template.id, template.node.engine))
    now = clock.now()
    with database.atomic():
        changed = Template.update(status="deleted", deleted_at=now, updated_at=now).where(
            Template.id == template.id, Template.deleted_at.is_null()).execute()
        if changed:
            _emit("template.deleted", template.id)
