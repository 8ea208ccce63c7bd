"""Backups of instances: self-contained archive files in the appliance's store.

A backup is a row and a file (services/instances/store.py, in BACKUP_DIR): the archive the
instance's engine wrote of its disk (`Driver.export_archive`), with its size and sha256.
It outlives the instance; any node of the same engine restores it onto an instance of
the project (`backup_requests.restore`, a job) or makes a new instance from it
(`POST .../instances` with `backup_id`). Kinds: `manual` (asked for), `scheduled` (a
backup tier's, with `expires_at`) and `final` (kept by a delete, `DELETE .../instances/{id}
?final_backup=true`: if it fails, nothing is deleted).

Statuses: creating -> available | failed; available -> restoring (while a job restores or
creates from it) -> available; available | failed -> deleting -> deleted (the row stays,
marked, for the bills). Backups count against the account's `backups` limit while kept
(KEPT) and are metered per GB-hour by their archive's size.

This module holds the rows, the reading, the synchronous delete (no engine work: the
archive is a file) and the steps the jobs run; the requests that queue backup jobs are in
backup_requests.py. Final backups from before migration 0015 are engine archives
(`engine_ref`): listed and deleted as before, never restored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from appliance.db import database
from appliance.drivers.base import Driver
from appliance.errors import Conflict, InvalidRequest, NotFound
from appliance.models import Backup, Image, Instance, Job, Node, Plan, Project
from appliance.services import audit, clock, pagination, projects
from appliance.services.events import outbox
from appliance.services.ids import new_id
from appliance.services.instances import jobs, nodes, store
from appliance.services.principal import Principal

MANUAL, SCHEDULED, FINAL = "manual", "scheduled", "final"
KINDS = (MANUAL, SCHEDULED, FINAL)
STATUSES = ("creating", "available", "restoring", "failed", "deleting", "deleted")
KEPT = ("creating", "available", "restoring", "deleting")  # counted and metered
USABLE = ("available", "restoring")  # may be restored or made an instance from
NAME_MAX = 64


def snapshot(backup: Backup) -> dict[str, Any]:
    """What events say of a backup (no secret: ids, names, sizes, states)."""
    return {"id": backup.id, "name": backup.name, "kind": backup.kind,
            "status": backup.status, "project_id": backup.project_id,
            "instance_id": backup.instance_id, "instance_name": backup.instance_name,
            "engine": backup.node.engine, "size_bytes": backup.size_bytes,
            "sha256": backup.sha256, "created_at": clock.isoformat(backup.created_at)}


def _emit(event_type: str, backup_id: str, **extra: Any) -> None:
    backup = Backup.get_by_id(backup_id)
    outbox.emit(event_type, project_id=backup.project_id,
                data={"backup": snapshot(backup), **extra})


def emit_failed(backup_id: str, error: str, job: Job | None = None) -> None:
    """backup.failed, inside the transaction that failed it."""
    _emit("backup.failed", backup_id, error=error[:500],
          job_id=job.id if job is not None else None)


def check_name(name: str | None, default: str) -> str:
    name = (name or "").strip() or default[:NAME_MAX]
    if len(name) > NAME_MAX or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidRequest(f"A backup's name has at most {NAME_MAX} printable characters.",
                             field="name")
    return name


# Reading -----------------------------------------------------------------------------


def _rows(project_id: str) -> Any:
    return (Backup.select(Backup, Node).join(Node, on=(Backup.node == Node.id))
            .where(Backup.project == project_id, Backup.deleted_at.is_null()))


def list_backups(principal: Principal, project_id: str, limit: int = 50,
                 cursor: str | None = None, kind: str | None = None) -> pagination.Page[Backup]:
    """A project's backups, newest first (of one kind when asked)."""
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    query = _rows(project_id)
    if kind is not None:
        query = query.where(Backup.kind == kind)
    return pagination.page(query, Backup, limit, cursor)


def _live_instance(project_id: str, instance_id: str) -> Instance:
    instance = Instance.get_or_none(Instance.id == instance_id, Instance.project == project_id,
                                    Instance.deleted_at.is_null())
    if instance is None:
        raise NotFound("No such instance.", code="instance_not_found")
    return instance


def list_instance_backups(principal: Principal, project_id: str, instance_id: str,
                          limit: int = 50,
                          cursor: str | None = None) -> pagination.Page[Backup]:
    """One live instance's backups (manual, scheduled, final), newest first."""
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    _live_instance(project_id, instance_id)
    query = _rows(project_id).where(Backup.instance == instance_id)
    return pagination.page(query, Backup, limit, cursor)


def get_backup(principal: Principal, project_id: str, backup_id: str,
               least: str = projects.READ, instance_id: str | None = None) -> Backup:
    """A backup of the project (of that live instance, when `instance_id` is given)."""
    principal.require_scope("instances:read")
    projects.access(principal, project_id, least)
    query = _rows(project_id).where(Backup.id == backup_id)
    if instance_id is not None:
        _live_instance(project_id, instance_id)
        query = query.where(Backup.instance == instance_id)
    backup = query.first()
    if backup is None:
        raise NotFound("No such backup.", code="backup_not_found")
    return backup


def _users(backup_id: str, except_job: str | None = None) -> int:
    """Unfinished jobs that read the backup's archive (a restore, a create from it)."""
    query = Job.select().where(Job.status.in_(jobs.UNFINISHED),
                               Job.params.contains(f'"backup_id": "{backup_id}"'))
    if except_job is not None:
        query = query.where(Job.id != except_job)
    return query.count()


def users(backup_id: str) -> int:
    """Unfinished jobs that read the backup's archive."""
    return _users(backup_id)


# Taking one (inside the request's transaction, then as a job step) ---------------------


def begin(instance: Instance, principal: Principal, kind: str, name: str) -> Backup:
    """The row of a backup a job is about to take (inside the request's transaction)."""
    now = clock.now()
    return Backup.create(id=new_id("bak"), project=instance.project_id, instance=instance,
                         instance_name=instance.name, name=name, node=instance.node_id,
                         kind=kind, status="creating", size_gb=instance.plan.disk_gb,
                         disk_gb=instance.plan.disk_gb, image=instance.image_id,
                         created_by=principal.user, created_at=now, updated_at=now)


def begin_final(instance: Instance, principal: Principal) -> Backup:
    return begin(instance, principal, FINAL, "Final backup")


def take(backup_id: str, instance: Instance, driver: Driver, job: Job | None = None) -> None:
    """Write the instance's archive into the store (a job step) and mark the backup
    available, with its size and checksum (backup.created). Run again after a crash, it
    writes the archive anew; a backup already available is left as it is."""
    backup = Backup.get_by_id(backup_id)
    if backup.status != "creating":
        return
    written = store.write(store.name_for(backup_id, instance.node.engine),
                          lambda sink: driver.export_archive(instance.driver_ref, sink))
    with database.atomic():
        changed = Backup.update(
            status="available", archive=written.name, size_bytes=written.size_bytes,
            sha256=written.sha256, size_gb=max(1, math.ceil(written.size_bytes / 2**30)),
            error=None, updated_at=clock.now()).where(
            Backup.id == backup_id, Backup.status == "creating").execute()
        if changed:
            _emit("backup.created", backup_id, job_id=job.id if job is not None else None)


def mark_failed(backup_id: str, error: str, job: Job | None = None) -> None:
    """A backup that could not be taken: failed, with the reason (backup.failed); no
    part of its archive stays in the store."""
    backup = Backup.get_by_id(backup_id)
    try:
        store.remove(store.name_for(backup_id, backup.node.engine))
    except store.StoreError:
        pass  # the start-up check removes it
    with database.atomic():
        changed = Backup.update(status="failed", error=error[:500], size_gb=0,
                                updated_at=clock.now()).where(
            Backup.id == backup_id, Backup.status == "creating").execute()
        if changed:
            emit_failed(backup_id, error, job)


# Using one (restores, new instances) ---------------------------------------------------


def usable(project_id: str, backup_id: str, field: str | None = None) -> Backup:
    """A backup of the project whose archive may be restored (404 otherwise; 409 while
    it is not available). With `field`, an unknown one is 400 naming that field."""
    backup = _rows(project_id).where(Backup.id == backup_id).first()
    if backup is None:
        if field is not None:
            raise InvalidRequest("No such backup in this project.", code="backup_not_found",
                                 field=field)
        raise NotFound("No such backup.", code="backup_not_found")
    if backup.status not in USABLE or not backup.archive:
        reason = ("it was kept on its engine before backups became archives"
                  if backup.engine_ref and not backup.archive else f"it is {backup.status}")
        raise Conflict(f"This backup cannot be restored: {reason}.", code="invalid_state",
                       details={"status": backup.status, "allowed": list(USABLE)})
    return backup


def check_target(backup: Backup, node: Node, plan: Plan) -> None:
    """Whether the backup can go onto an instance of `plan` on `node` (same engine, a disk
    at least as large, an engine that restores archives)."""
    if backup.node.engine != node.engine:
        raise Conflict(f"This backup is of a {backup.node.engine} instance; it can only go "
                       f"onto {backup.node.engine}, not {node.engine}.", code="engine_mismatch",
                       details={"backup_engine": backup.node.engine, "engine": node.engine})
    if plan.disk_gb < backup.disk_gb:
        raise InvalidRequest(f"This backup is of a {backup.disk_gb} GB disk; the plan has "
                             f"{plan.disk_gb} GB.", code="plan_too_small", field="plan_id",
                             details={"resource": "disk_gb", "minimum": backup.disk_gb})
    driver = nodes.driver_for(node)
    nodes.engine_call(lambda: driver.capabilities().require("backups"))


def source_image(backup: Backup) -> Image:
    """The image row an instance made from the backup shows (its source's)."""
    if backup.image is None:
        raise Conflict("The image this backup's instance was made from is gone from the "
                       "catalog.", code="image_not_found")
    return backup.image


def mark_in_use(backup: Backup) -> None:
    Backup.update(status="restoring", updated_at=clock.now()).where(
        Backup.id == backup.id, Backup.status == "available").execute()


def release(backup_id: str, job: Job) -> None:
    """The job that read the archive ended: the backup is available again once no other
    job uses it."""
    with database.atomic():
        if _users(backup_id, except_job=job.id) == 0:
            Backup.update(status="available", updated_at=clock.now()).where(
                Backup.id == backup_id, Backup.status == "restoring").execute()


@contextmanager
def verified_archive(backup_id: str) -> Iterator[BinaryIO]:
    """The backup's archive, open, once its checksum matches the one recorded; a changed
    or missing archive fails the backup for good (the caller's job fails with it)."""
    backup = Backup.get_by_id(backup_id)
    found = store.checksum(backup.archive)
    if found != backup.sha256:
        message = "The archive no longer matches its checksum; it cannot be used."
        with database.atomic():
            Backup.update(status="failed", error=message, size_gb=0,
                          updated_at=clock.now()).where(Backup.id == backup_id).execute()
            emit_failed(backup_id, message)
        raise Conflict(message, code="backup_corrupt")
    with store.opened(backup.archive) as handle:
        yield handle


def restored(backup_id: str, instance: Instance, job: Job) -> None:
    """After a restore job: backup.restored (inside the job's last transaction)."""
    _emit("backup.restored", backup_id, instance_id=instance.id, job_id=job.id)


# Deleting ----------------------------------------------------------------------------


def delete_backup(principal: Principal, project_id: str, backup_id: str,
                  instance_id: str | None = None) -> None:
    """Remove the archive from the store (or, for one from before migration 0015, from
    its engine), then mark the row deleted (backup.deleted). 409 while it is being taken
    or a job reads it. A crash between the two is finished by the start-up check."""
    principal.require_scope("backups:write")
    with database.atomic():
        backup = get_backup(principal, project_id, backup_id, projects.OPERATE, instance_id)
        if backup.status == "creating":
            raise Conflict("This backup is still being taken; wait for it.",
                           code="invalid_state", details={"status": backup.status})
        if _users(backup.id):
            raise Conflict("A job is restoring this backup or making an instance from it; "
                           "wait for it.", code="backup_in_use")
        Backup.update(status="deleting", updated_at=clock.now()).where(
            Backup.id == backup.id).execute()
    finish_delete(backup)
    with database.atomic():
        audit.record("backup.delete", actor=principal.user, target_type="backup",
                     target_id=backup.id, ip=principal.ip)


def finish_delete(backup: Backup) -> None:
    """Remove what the backup holds and mark it deleted (backup.deleted)."""
    if backup.engine_ref:
        driver = nodes.driver_for(backup.node)
        nodes.engine_call(lambda: driver.delete_archive(backup.engine_ref))
    if backup.archive:
        store.remove(backup.archive)
    store.remove(store.name_for(backup.id, backup.node.engine))  # a partial one
    now = clock.now()
    with database.atomic():
        changed = Backup.update(status="deleted", deleted_at=now, updated_at=now).where(
            Backup.id == backup.id, Backup.deleted_at.is_null()).execute()
        if changed:
            _emit("backup.deleted", backup.id)


def kept_count(owner_id: str) -> int:
    """The backups counted against the `backups` limit of the account `owner_id`."""
    return (Backup.select().join(Project, on=(Backup.project == Project.id))
            .where(Project.created_by == owner_id, Backup.deleted_at.is_null(),
                   Backup.status.in_(KEPT)).count())
