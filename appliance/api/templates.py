"""Templates over JSON: make one from a backup (`/projects/{project_id}/instances/
{instance_id}/backups/{backup_id}/template`), and a project's templates (`/projects/
{project_id}/templates`: list, read, rename, delete). An instance is made from one with
`template_id` on `POST /projects/{project_id}/instances`."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.instances import JobOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Template
from appliance.services.instances import templates
from appliance.services.principal import Principal

bp = ApiBlueprint("templates_api", __name__)
TAGS = ("templates",)
BASE = "/projects/<project_id>/templates"
FROM_BACKUP = "/projects/<project_id>/instances/<instance_id>/backups/<backup_id>/template"


class TemplateOut(Schema):
    id: str
    project_id: str
    name: str
    status: Literal["creating", "available", "failed", "deleting", "deleted"]
    source_instance_id: str | None = Field(description="The instance whose backup it was "
                                           "made from (which may be deleted since).")
    source_instance_name: str = Field(description="Its name when the backup was taken.")
    source_backup_id: str | None = Field(description="The backup it was made from (which "
                                         "may be deleted since: the template keeps its own "
                                         "archive).")
    engine: str = Field(description="The engine whose nodes can make instances from it.")
    size_bytes: int | None = Field(description="Its archive's size, once made.")
    sha256: str | None = Field(description="Its archive's checksum (hex), once made.")
    size_gb: int = Field(description="What storage is billed and limited by: the archive's "
                                     "size in GiB, rounded up.")
    disk_gb: int = Field(description="The least disk a plan making an instance from it "
                                     "needs.")
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, template: Template) -> TemplateOut:
        return cls(id=template.id, project_id=template.project_id, name=template.name,
                   status=template.status, source_instance_id=template.source_instance_id,
                   source_instance_name=template.source_instance_name,
                   source_backup_id=template.source_backup_id, engine=template.node.engine,
                   size_bytes=template.size_bytes, sha256=template.sha256,
                   size_gb=template.size_gb, disk_gb=template.disk_gb, error=template.error,
                   created_at=template.created_at, updated_at=template.updated_at)


class TemplateList(Schema):
    data: list[TemplateOut]
    page: PageInfo


class TemplateIn(Schema):
    name: str = Field(min_length=1, max_length=templates.NAME_MAX)


class TemplateAccepted(Schema):
    """202: the template is being made; follow `job` (GET .../jobs/{job_id})."""

    template: TemplateOut
    job: JobOut


@bp.operation(FROM_BACKUP, "POST", summary="Save a backup as a template (202 with its job)",
              tags=TAGS, body=TemplateIn, response=TemplateAccepted, status=202,
              auth=USER_OR_KEY, errors=(400, 403, 404, 409),
              description="The template gets its own copy of the backup's archive in the "
                          "backup store, so it outlives the backup and the instance. It is "
                          "private to the project. 403 quota_exceeded past the account's "
                          "template_storage_gb limit (nothing is copied); 409 invalid_state "
                          "unless the backup is available.")
def create_template(principal: Principal, project_id: str, instance_id: str, backup_id: str,
                    body: TemplateIn):
    accepted = templates.create_template(principal, project_id, instance_id, backup_id,
                                         body.name)
    return {"template": TemplateOut.of(accepted.template), "job": JobOut.of(accepted.job)}, 202


@bp.operation(BASE, summary="A project's templates", tags=TAGS, query=ListQuery,
              response=TemplateList, auth=USER_OR_KEY, errors=(403, 404),
              description="Newest first.")
def list_templates(principal: Principal, project_id: str, query: ListQuery):
    rows, cursor = templates.list_templates(principal, project_id, query.limit, query.cursor)
    return page_body([TemplateOut.of(row) for row in rows], query.limit, cursor)


@bp.operation(BASE + "/<template_id>", summary="A template", tags=TAGS, response=TemplateOut,
              auth=USER_OR_KEY, errors=(403, 404))
def get_template(principal: Principal, project_id: str, template_id: str):
    return TemplateOut.of(templates.get_template(principal, project_id, template_id))


@bp.operation(BASE + "/<template_id>", "PATCH", summary="Rename a template", tags=TAGS,
              body=TemplateIn, response=TemplateOut, auth=USER_OR_KEY,
              errors=(400, 403, 404))
def rename_template(principal: Principal, project_id: str, template_id: str,
                    body: TemplateIn):
    return TemplateOut.of(templates.rename_template(principal, project_id, template_id,
                                                    body.name))


@bp.operation(BASE + "/<template_id>", "DELETE", summary="Delete a template (its archive too)",
              tags=TAGS, status=204, auth=USER_OR_KEY, errors=(403, 404, 409, 503),
              description="409 template_in_use while an instance is being created from it, "
                          "invalid_state while it is being made.")
def delete_template(principal: Principal, project_id: str, template_id: str):
    templates.delete_template(principal, project_id, template_id)
    return None, 204
