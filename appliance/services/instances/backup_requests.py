"""The requests that queue backup jobs: take a backup now, restore one onto an instance.

Both are checked here - scope `backups:write`, the member role, the instance's state
and billing, the account's `backups` limit (before anything is asked of the engine), the
engine's capability (409 `unsupported` naming `backups`) - and answered 202 with the
job, which runs on the job runner (engine_jobs.py: `backup.create`, `backup.restore`).
A job is the instance's one operation at a time (409 `operation_in_progress`), so a
backup never runs beside a resize, a restore or another backup of the same instance.

A restore takes a backup of any instance of the project whose engine is the instance's:
a backup of the instance itself, or of another one (a "clone back"), even of one deleted
since. The disk is replaced; the instance is stopped for it where the engine needs that,
and started again if it was running.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.db import database
from appliance.models import Backup, Instance, Job
from appliance.services import audit, clock
from appliance.services.instances import backups, jobs, lifecycle, nodes
from appliance.services.limits import quotas
from appliance.services.principal import Principal

SCOPE = "backups:write"
FROM = ("running", "stopped")


@dataclass(frozen=True)
class Accepted:
    backup: Backup
    instance: Instance
    job: Job


def create_backup(principal: Principal, project_id: str, instance_id: str,
                  name: str | None = None) -> Accepted:
    """Queue a manual backup of the instance (running or stopped)."""
    principal.require_scope(SCOPE)
    with database.atomic():
        instance = lifecycle.changeable(principal, project_id, instance_id, allowed=FROM,
                                        action="back up", scope=SCOPE)
        label = backups.check_name(name, f"{instance.name} "
                                         f"{clock.now():%Y-%m-%d %H:%M}")
        quotas.check(instance.project.created_by, "backups", 1)
        driver = nodes.driver_for(instance.node)
        nodes.engine_call(lambda: driver.capabilities().require("backups"))
        backup = backups.begin(instance, principal, backups.MANUAL, label)
        job = lifecycle.queue(instance, "backup.create", principal, "Backing up",
                              total_steps=2, backup_id=backup.id)
        lifecycle.record(instance, "backup.requested",
                         f"Backup {label} asked for by {principal.user.email}", job)
        audit.record("backup.create", actor=principal.user, target_type="backup",
                     target_id=backup.id, ip=principal.ip, instance_id=instance.id)
    jobs.wake()
    return Accepted(backups.get_backup(principal, project_id, backup.id), instance, job)


def restore_backup(principal: Principal, project_id: str, instance_id: str,
                   backup_id: str) -> Accepted:
    """Queue the restore of a backup of the project onto the instance."""
    principal.require_scope(SCOPE)
    with database.atomic():
        instance = lifecycle.changeable(principal, project_id, instance_id, allowed=FROM,
                                        action="restore", scope=SCOPE)
        backup = backups.usable(project_id, backup_id)
        backups.check_target(backup, instance.node, instance.plan)
        # Recorded now: a job run again after a crash may find it stopped by itself.
        job = lifecycle.queue(instance, "backup.restore", principal, "Restoring",
                              total_steps=3, backup_id=backup.id,
                              start=instance.status == "running")
        backups.mark_in_use(backup)
        source = ("" if backup.instance_id == instance.id
                  else f" (of {backup.instance_name})")
        lifecycle.record(instance, "backup.restore_requested",
                         f"Restore of {backup.name}{source} asked for by "
                         f"{principal.user.email}", job)
        audit.record("backup.restore", actor=principal.user, target_type="backup",
                     target_id=backup.id, ip=principal.ip, instance_id=instance.id)
    jobs.wake()
    return Accepted(backups.get_backup(principal, project_id, backup.id),
                    lifecycle.get_instance(principal, project_id, instance_id), job)
