"""Backups of a project's instances over JSON (`/projects/{project_id}/backups`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Backup
from appliance.services.instances import backups
from appliance.services.principal import Principal

bp = ApiBlueprint("backups_api", __name__)
TAGS = ("backups",)
BASE = "/projects/<project_id>/backups"


class BackupOut(Schema):
    id: str
    project_id: str
    instance_id: str | None
    instance_name: str
    kind: Literal["final"]
    status: Literal["creating", "available", "failed", "deleted"]
    size_gb: int
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, backup: Backup) -> BackupOut:
        return cls(id=backup.id, project_id=backup.project_id, instance_id=backup.instance_id,
                   instance_name=backup.instance_name, kind=backup.kind, status=backup.status,
                   size_gb=backup.size_gb, error=backup.error, created_at=backup.created_at,
                   updated_at=backup.updated_at)


class BackupList(Schema):
    data: list[BackupOut]
    page: PageInfo


@bp.operation(BASE, summary="Backups of a project's instances", tags=TAGS, query=ListQuery,
              response=BackupList, auth=USER_OR_KEY, errors=(403, 404))
def list_backups(principal: Principal, project_id: str, query: ListQuery):
    rows, cursor = backups.list_backups(principal, project_id, query.limit, query.cursor)
    return page_body([BackupOut.of(row) for row in rows], query.limit, cursor)


@bp.operation(BASE + "/<backup_id>", summary="A backup", tags=TAGS, response=BackupOut,
              auth=USER_OR_KEY, errors=(403, 404))
def get_backup(principal: Principal, project_id: str, backup_id: str):
    return BackupOut.of(backups.get_backup(principal, project_id, backup_id))


@bp.operation(BASE + "/<backup_id>", "DELETE", summary="Delete a backup (on its engine too)",
              tags=TAGS, status=204, auth=USER_OR_KEY, errors=(403, 404, 503))
def delete_backup(principal: Principal, project_id: str, backup_id: str):
    backups.delete_backup(principal, project_id, backup_id)
    return None, 204
