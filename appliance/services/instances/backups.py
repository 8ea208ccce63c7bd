"""Backups of instances kept by the appliance.

For now one kind: the final backup a delete keeps when asked (`DELETE .../instances/{id}
?final_backup=true`). The delete job archives the instance on its engine before
destroying it (`Driver.archive`: an engine object that outlives the instance and is not
offered as an image); if the archive fails, nothing is deleted. The engine must support
snapshots (409 `unsupported` naming the capability otherwise). Backups are listed per
project and removed by members who may delete instances.
"""

from __future__ import annotations

from appliance.db import database
from appliance.drivers.base import Driver
from appliance.errors import NotFound
from appliance.models import Backup, Instance
from appliance.services import audit, clock, pagination, projects
from appliance.services.ids import new_id
from appliance.services.instances import nodes
from appliance.services.principal import Principal

FINAL = "final"


def begin_final(instance: Instance, principal: Principal) -> Backup:
    """The row of the final backup a delete job is about to take (inside its transaction)."""
    now = clock.now()
    return Backup.create(id=new_id("bak"), project=instance.project_id, instance=instance,
                         instance_name=instance.name, node=instance.node_id, kind=FINAL,
                         status="creating", size_gb=instance.plan.disk_gb,
                         created_by=principal.user, created_at=now, updated_at=now)


def take(backup_id: str, instance: Instance, driver: Driver) -> None:
    """Archive the instance on its engine (a job step); an archive taken again replaces
    the earlier one, so a retried job does not leave two."""
    engine_ref = driver.archive(instance.driver_ref, "final-" + backup_id.removeprefix("bak_"))
    with database.atomic():
        Backup.update(status="available", engine_ref=engine_ref, error=None,
                      updated_at=clock.now()).where(Backup.id == backup_id).execute()


def mark_failed(backup_id: str, error: str) -> None:
    with database.atomic():
        Backup.update(status="failed", error=error[:500], updated_at=clock.now()).where(
            Backup.id == backup_id, Backup.status == "creating").execute()


def list_backups(principal: Principal, project_id: str, limit: int = 50,
                 cursor: str | None = None) -> pagination.Page[Backup]:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, projects.READ)
    query = Backup.select().where(Backup.project == project_id, Backup.deleted_at.is_null())
    return pagination.page(query, Backup, limit, cursor)


def get_backup(principal: Principal, project_id: str, backup_id: str,
               least: str = projects.READ) -> Backup:
    principal.require_scope("instances:read")
    projects.access(principal, project_id, least)
    backup = Backup.get_or_none(Backup.id == backup_id, Backup.project == project_id,
                                Backup.deleted_at.is_null())
    if backup is None:
        raise NotFound("No such backup.", code="backup_not_found")
    return backup


def delete_backup(principal: Principal, project_id: str, backup_id: str) -> None:
    """Remove the archive from its engine, then the row (kept, marked deleted)."""

    principal.require_scope("backups:write")
    backup = get_backup(principal, project_id, backup_id, projects.OPERATE)
    if backup.engine_ref:
        driver = nodes.driver_for(backup.node)
        nodes.engine_call(lambda: driver.delete_archive(backup.engine_ref))
    now = clock.now()
    with database.atomic():
        Backup.update(status="deleted", deleted_at=now, updated_at=now).where(
            Backup.id == backup.id).execute()
        audit.record("backup.delete", actor=principal.user, target_type="backup",
                     target_id=backup.id, ip=principal.ip)
