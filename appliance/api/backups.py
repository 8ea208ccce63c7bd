"""Backups over JSON: an instance's (`/projects/{project_id}/instances/{instance_id}/
backups`: list, take one, restore, delete) and a project's (`/projects/{project_id}/
backups`, where the final backups of deleted instances stay)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.instances import InstanceOut, JobOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Backup
from appliance.services.instances import backup_requests, backup_tiers, backups
from appliance.services.principal import Principal

bp = ApiBlueprint("backups_api", __name__)
TAGS = ("backups",)
BASE = "/projects/<project_id>/backups"
OF_INSTANCE = "/projects/<project_id>/instances/<instance_id>/backups"
ERRORS = (403, 404, 409)

Kind = Literal["manual", "scheduled", "final"]


class BackupOut(Schema):
    id: str
    project_id: str
    instance_id: str | None = Field(description="null once its instance is deleted.")
    instance_name: str = Field(description="The instance's name when the backup was taken.")
    name: str
    kind: Kind
    status: Literal["creating", "available", "restoring", "failed", "deleting", "deleted"]
    engine: str = Field(description="The engine whose instances can take it (incus, docker, "
                                    "fake): any node of it.")
    node_id: str = Field(description="The node it was taken on.")
    size_bytes: int | None = Field(description="The archive's size, once written.")
    sha256: str | None = Field(description="The archive's checksum (hex), once written.")
    size_gb: int = Field(description="What storage is billed by: the archive's size in GiB, "
                                     "rounded up.")
    disk_gb: int = Field(description="The instance's disk when taken: the least a plan "
                                     "restoring it needs.")
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    expires_at: dt.datetime | None = Field(description="Scheduled backups: when pruned.")
    weekly: bool = Field(description="A scheduled backup kept as its ISO week's (the "
                                     "extended tier), until `expires_at`.")

    @classmethod
    def of(cls, backup: Backup) -> BackupOut:
        return cls(id=backup.id, project_id=backup.project_id, instance_id=backup.instance_id,
                   instance_name=backup.instance_name, name=backup.name or "",
                   kind=backup.kind, status=backup.status, engine=backup.node.engine,
                   node_id=backup.node_id, size_bytes=backup.size_bytes, sha256=backup.sha256,
                   size_gb=backup.size_gb, disk_gb=backup.disk_gb, error=backup.error,
                   created_at=backup.created_at, updated_at=backup.updated_at,
                   expires_at=backup.expires_at, weekly=bool(backup.weekly))


class BackupList(Schema):
    data: list[BackupOut]
    page: PageInfo


class ProjectBackupQuery(ListQuery):
    kind: Kind | None = Field(None, description="Only backups of this kind.")


class BackupIn(Schema):
    name: str | None = Field(None, max_length=backups.NAME_MAX,
                             description="Default: the instance's name and the time.")


class BackupAccepted(Schema):
    """202: the backup is being taken; follow `job` (GET .../jobs/{job_id})."""

    backup: BackupOut
    job: JobOut


class RestoreAccepted(Schema):
    """202: the restore is queued; follow `job`."""

    backup: BackupOut
    instance: InstanceOut
    job: JobOut


@bp.operation(BASE, summary="Backups of a project's instances", tags=TAGS,
              query=ProjectBackupQuery, response=BackupList, auth=USER_OR_KEY,
              errors=(403, 404), description="Newest first, those of deleted instances too "
                                             "(their final backups).")
def list_backups(principal: Principal, project_id: str, query: ProjectBackupQuery):
    rows, cursor = backups.list_backups(principal, project_id, query.limit, query.cursor,
                                        query.kind)
    return page_body([BackupOut.of(row) for row in rows], query.limit, cursor)


@bp.operation(BASE + "/<backup_id>", summary="A backup", tags=TAGS, response=BackupOut,
              auth=USER_OR_KEY, errors=(403, 404))
def get_backup(principal: Principal, project_id: str, backup_id: str):
    return BackupOut.of(backups.get_backup(principal, project_id, backup_id))


@bp.operation(BASE + "/<backup_id>", "DELETE", summary="Delete a backup (its archive too)",
              tags=TAGS, status=204, auth=USER_OR_KEY, errors=(*ERRORS, 503),
              description="409 while it is being taken or a job reads it.")
def delete_backup(principal: Principal, project_id: str, backup_id: str):
    backups.delete_backup(principal, project_id, backup_id)
    return None, 204


@bp.operation(OF_INSTANCE, summary="An instance's backups", tags=TAGS, query=ListQuery,
              response=BackupList, auth=USER_OR_KEY, errors=(403, 404),
              description="Manual, scheduled and final, newest first.")
def list_instance_backups(principal: Principal, project_id: str, instance_id: str,
                          query: ListQuery):
    rows, cursor = backups.list_instance_backups(principal, project_id, instance_id,
                                                 query.limit, query.cursor)
    return page_body([BackupOut.of(row) for row in rows], query.limit, cursor)


@bp.operation(OF_INSTANCE, "POST", summary="Back up an instance now (202 with its job)",
              tags=TAGS, body=BackupIn, response=BackupAccepted, status=202,
              auth=USER_OR_KEY, errors=(402, *ERRORS, 503),
              description="An archive of the instance's disk, taken while it runs, kept in "
                          "the appliance's backup store (it outlives the instance). 403 "
                          "quota_exceeded past the account's backups limit (nothing is asked "
                          "of the engine); 409 unsupported when the engine cannot.")
def create_backup(principal: Principal, project_id: str, instance_id: str, body: BackupIn):
    accepted = backup_requests.create_backup(principal, project_id, instance_id, body.name)
    return {"backup": BackupOut.of(accepted.backup), "job": JobOut.of(accepted.job)}, 202


@bp.operation(OF_INSTANCE + "/<backup_id>", summary="One of an instance's backups",
              tags=TAGS, response=BackupOut, auth=USER_OR_KEY, errors=(403, 404))
def get_instance_backup(principal: Principal, project_id: str, instance_id: str,
                        backup_id: str):
    return BackupOut.of(backups.get_backup(principal, project_id, backup_id,
                                           instance_id=instance_id))


@bp.operation(OF_INSTANCE + "/<backup_id>", "DELETE", summary="Delete one of an instance's "
              "backups", tags=TAGS, status=204, auth=USER_OR_KEY, errors=(*ERRORS, 503),
              description="The archive is removed from the store; 409 while it is being "
                          "taken or a job reads it.")
def delete_instance_backup(principal: Principal, project_id: str, instance_id: str,
                           backup_id: str):
    backups.delete_backup(principal, project_id, backup_id, instance_id)
    return None, 204


@bp.operation(OF_INSTANCE + "/<backup_id>/restore", "POST", summary="Restore a backup onto "
              "the instance (202 with its job)", tags=TAGS, response=RestoreAccepted,
              status=202, auth=USER_OR_KEY, errors=(402, *ERRORS, 503),
              description="The instance's disk is replaced by the backup's. The backup may "
                          "be of another instance of the project (also a deleted one) on "
                          "the same engine (409 engine_mismatch otherwise). The instance is "
                          "stopped for it where the engine needs that and started again if "
                          "it was running.")
def restore_backup(principal: Principal, project_id: str, instance_id: str, backup_id: str):
    accepted = backup_requests.restore_backup(principal, project_id, instance_id, backup_id)
    return {"backup": BackupOut.of(accepted.backup),
            "instance": InstanceOut.of(accepted.instance, accepted.job),
            "job": JobOut.of(accepted.job)}, 202


class BackupTierIn(Schema):
    tier: Literal["none", "basic", "extended"] = Field(
        description="basic: a daily backup kept 7 days; extended: a daily backup kept 14 "
                    "days, the first of each ISO week kept 8 weeks (the operator's settings "
                    "may differ); none: no scheduled backups (those taken stay until they "
                    "expire).")


@bp.operation("/projects/<project_id>/instances/<instance_id>/backup-tier", "PUT",
              summary="Choose the instance's scheduled backup tier", tags=TAGS,
              body=BackupTierIn, status=204, auth=USER_OR_KEY, errors=(402, *ERRORS, 503),
              description="Scheduled backups are taken daily in the hour BACKUP_TIER_HOUR "
                          "(UTC), each instance at its own minute, and count against the "
                          "account's backups limit. A paid tier is charged by the hour "
                          "(its own invoice line); 409 unsupported when the engine cannot "
                          "take backups.")
def put_backup_tier(principal: Principal, project_id: str, instance_id: str,
                    body: BackupTierIn):
    backup_tiers.set_tier(principal, project_id, instance_id, body.tier)
    return None, 204
