"""Instances and their jobs over JSON (`/projects/{project_id}/instances/...`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from flask import Response
from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Instance, InstanceEvent, Job
from appliance.services.instances import jobs, lifecycle
from appliance.services.instances.lifecycle import Started
from appliance.services.principal import Principal

bp = ApiBlueprint("instances_api", __name__)
TAGS = ("instances",)
AUTH = USER_OR_KEY
ERRORS = (403, 404, 409)
BASE = "/projects/<project_id>/instances"
ONE = BASE + "/<instance_id>"


class ProgressOut(Schema):
    step: int
    total: int
    percent: int
    message: str


class JobOut(Schema):
    id: str
    type: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: ProgressOut
    error: str | None
    error_code: str | None
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    instance: str | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        figures = jobs.progress_of(job)
        return cls(id=job.id, type=job.type, status=job.status,
                   progress=ProgressOut(step=figures.step, total=figures.total,
                                        percent=figures.percent, message=job.message),
                   error=job.error, error_code=job.error_code, attempts=job.attempts,
                   created_at=job.created_at, started_at=job.started_at,
                   finished_at=job.finished_at, instance=job.instance_id)


class JobList(Schema):
    data: list[JobOut]
    page: PageInfo


class PlanRef(Schema):
    id: str
    slug: str
    name: str
    vcpus: int
    memory_mb: int
    disk_gb: int


class ImageRef(Schema):
    id: str
    name: str
    default_user: str


class NodeRef(Schema):
    id: str
    name: str
    engine: str
    simulated: bool


class InstanceOut(Schema):
    id: str
    project_id: str
    name: str
    status: Literal["creating", "running", "stopped", "failed", "deleting", "deleted"] = Field(
        description="running as soon as the engine runs a new instance; its create job "
                    "(`job`) may still be setting the password.")
    power_state: str
    ipv4: str | None
    ipv6: str | None
    plan: PlanRef
    image: ImageRef
    node: NodeRef
    suspended: bool
    backup_tier: Literal["none", "basic", "extended"] = Field(
        description="Its scheduled backups (PUT .../backup-tier): none, basic (daily, kept "
                    "7 days) or extended (daily kept 14 days, weekly kept 8 weeks); the "
                    "numbers are the operator's settings.")
    job: JobOut | None = Field(description="The operation in progress, if any.")
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, instance: Instance, job: Job | None = None) -> InstanceOut:
        plan, image, node = instance.plan, instance.image, instance.node
        return cls(
            id=instance.id, project_id=instance.project_id, name=instance.name,
            status=instance.status, power_state=instance.power_state, ipv4=instance.ipv4,
            ipv6=instance.ipv6,
            plan=PlanRef(id=plan.id, slug=plan.slug, name=plan.name, vcpus=plan.vcpus,
                         memory_mb=plan.memory_mb, disk_gb=plan.disk_gb),
            image=ImageRef(id=image.id, name=image.name, default_user=image.default_user),
            node=NodeRef(id=node.id, name=node.name, engine=node.engine,
                         simulated=node.simulated),
            suspended=instance.suspended_at is not None,
            backup_tier=instance.backup_tier,
            job=JobOut.of(job) if job is not None else None,
            created_at=instance.created_at, updated_at=instance.updated_at)


class InstanceList(Schema):
    data: list[InstanceOut]
    page: PageInfo


class InstanceAccepted(Schema):
    """202: the operation is queued; follow `job` (GET .../jobs/{job_id})."""

    instance: InstanceOut
    job: JobOut
    password: str | None = Field(None, description="A generated password, shown once.")


class CreateIn(Schema):
    name: str = Field(min_length=1, max_length=lifecycle.NAME_MAX, description="A hostname: "
                      "^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$, unique in the project.")
    plan_id: str = Field(min_length=1, max_length=60, description="Plan id or slug.")
    image_id: str | None = Field(None, max_length=40)
    app_slug: str | None = Field(None, max_length=60)
    backup_id: str | None = Field(None, max_length=40, description="A backup of the "
                                  "project (also the final backup of a deleted instance): "
                                  "the new instance starts with its disk, on its engine.")
    template_id: str | None = Field(None, max_length=40, description="A template of the "
                                    "project (GET .../templates): the new instance starts "
                                    "with its disk, on its engine.")
    ssh_key_ids: list[str] = Field(default_factory=list, max_length=20,
                                   description="SSH keys of your account.")
    password: str | None = Field(None, min_length=lifecycle.PASSWORD_MIN,
                                 max_length=lifecycle.PASSWORD_MAX,
                                 description="Omit to have one generated (shown once).")


class RenameIn(Schema):
    name: str = Field(min_length=1, max_length=lifecycle.NAME_MAX)


class ResizeIn(Schema):
    plan_id: str = Field(min_length=1, max_length=60)


class RebuildIn(Schema):
    image_id: str = Field(min_length=1, max_length=40)


class PasswordIn(Schema):
    password: str | None = Field(None, min_length=lifecycle.PASSWORD_MIN,
                                 max_length=lifecycle.PASSWORD_MAX)


class PasswordOut(Schema):
    password: str | None = Field(description="null once acknowledged.")


class InstanceSshKeyIn(Schema):
    public_key: str = Field(min_length=1, max_length=16384)


class InstanceEventOut(Schema):
    id: str
    type: str
    message: str
    job_id: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, event: InstanceEvent) -> InstanceEventOut:
        return cls(id=event.id, type=event.type, message=event.message, job_id=event.job_id,
                   created_at=event.created_at)


class InstanceEventList(Schema):
    data: list[InstanceEventOut]
    page: PageInfo


class InstanceQuery(ListQuery):
    include_deleted: bool = False


class LogQuery(Schema):
    lines: int = Field(200, ge=1, le=5000)


def _accepted(started: Started):
    return {"instance": InstanceOut.of(started.instance, started.job),
            "job": JobOut.of(started.job), "password": started.password}, 202


@bp.operation(BASE, summary="Instances of a project", tags=TAGS, query=InstanceQuery,
              response=InstanceList, auth=AUTH, errors=(403, 404))
def list_instances(principal: Principal, project_id: str, query: InstanceQuery):
    body = lifecycle.list_rendered(principal, project_id, query.limit, query.cursor,
                                   query.include_deleted, _render_page)
    return Response(body, mimetype="application/json")


def _render_page(rows: list[Instance], running: dict[str, Job], limit: int,
                 cursor: str | None) -> bytes:
    return InstanceList.model_validate(page_body(
        [InstanceOut.of(row, running.get(row.id)) for row in rows], limit, cursor)
    ).model_dump_json().encode()


@bp.operation(BASE, "POST", summary="Create an instance (202 with its job)", tags=TAGS,
              body=CreateIn, response=InstanceAccepted, status=202, auth=AUTH, errors=(402, *ERRORS,
                                                                              503),
              description="From an image, a one-click app, a backup or a template (one of "
                          "image_id, app_slug, backup_id, template_id). The plan must be "
                          "active, the image's and app's minimums (a backup's or "
                          "template's disk) met and your limits not exceeded "
                          "(403 quota_exceeded). 503 no_capacity when no node has room.")
def create_instance(principal: Principal, project_id: str, body: CreateIn):
    return _accepted(lifecycle.create_instance(
        principal, project_id, name=body.name, plan_id=body.plan_id, image_id=body.image_id,
        app_slug=body.app_slug, backup_id=body.backup_id,
        template_id=body.template_id, ssh_key_ids=body.ssh_key_ids,
        password=body.password))


@bp.operation(ONE, summary="One instance", tags=TAGS, response=InstanceOut, auth=AUTH,
              errors=(403, 404))
def get_instance(principal: Principal, project_id: str, instance_id: str):
    instance = lifecycle.get_instance(principal, project_id, instance_id)
    return InstanceOut.of(instance, lifecycle.current_jobs([instance.id]).get(instance.id))


@bp.operation(ONE, "PATCH", summary="Rename an instance", tags=TAGS, body=RenameIn,
              response=InstanceOut, auth=AUTH, errors=ERRORS)
def rename_instance(principal: Principal, project_id: str, instance_id: str, body: RenameIn):
    return InstanceOut.of(lifecycle.rename(principal, project_id, instance_id, body.name))


class DeleteQuery(Schema):
    final_backup: bool = Field(False, description="Keep a backup of the instance first, "
                               "in the backup store (GET .../backups); 409 unsupported when "
                               "the engine cannot, 403 quota_exceeded past the backups "
                               "limit. If it fails nothing is deleted.")


@bp.operation(ONE, "DELETE", summary="Delete an instance (202 with its job)", tags=TAGS,
              query=DeleteQuery, response=InstanceAccepted, status=202, auth=AUTH,
              errors=(*ERRORS, 503))
def delete_instance(principal: Principal, project_id: str, instance_id: str,
                    query: DeleteQuery):
    return _accepted(lifecycle.delete(principal, project_id, instance_id,
                                      final_backup=query.final_backup))


def _power_view(action: str):
    def view(principal: Principal, project_id: str, instance_id: str):
        return _accepted(lifecycle.power(principal, project_id, instance_id, action))

    view.__name__ = f"{action}_instance"
    return view


for _action, _summary in (("start", "Power on"), ("stop", "Power off (hard)"),
                          ("shutdown", "Shut down gracefully"), ("reboot", "Reboot"),
                          ("reset", "Reset (hard restart)")):
    bp.operation(f"{ONE}/{_action}", "POST", summary=_summary, tags=TAGS, response=InstanceAccepted,
                 status=202, auth=AUTH, errors=ERRORS,
                 description="409 invalid_state when the instance is not in a state this "
                             "action starts from; 409 operation_in_progress while another "
                             "job runs.")(_power_view(_action))


@bp.operation(f"{ONE}/resize", "POST", summary="Change the plan (disk cannot shrink)",
              tags=TAGS, body=ResizeIn, response=InstanceAccepted, status=202, auth=AUTH,
              errors=(402, *ERRORS))
def resize_instance(principal: Principal, project_id: str, instance_id: str, body: ResizeIn):
    return _accepted(lifecycle.resize(principal, project_id, instance_id, body.plan_id))


@bp.operation(f"{ONE}/rebuild", "POST", summary="Reinstall from an image", tags=TAGS,
              body=RebuildIn, response=InstanceAccepted, status=202, auth=AUTH, errors=ERRORS,
              description="The disk is erased. The answer carries a new generated password "
                          "(shown once; GET .../password until acknowledged), which the job "
                          "sets, and the job puts the instance's SSH keys back.")
def rebuild_instance(principal: Principal, project_id: str, instance_id: str,
                     body: RebuildIn):
    return _accepted(lifecycle.rebuild(principal, project_id, instance_id, body.image_id))


@bp.operation(f"{ONE}/reset-password", "POST", summary="Set a new password (generated "
              "when omitted, shown once)", tags=TAGS, body=PasswordIn, response=InstanceAccepted,
              status=202, auth=AUTH, errors=ERRORS)
def reset_password(principal: Principal, project_id: str, instance_id: str, body: PasswordIn):
    return _accepted(lifecycle.reset_password(principal, project_id, instance_id,
                                              body.password))


@bp.operation(f"{ONE}/password", summary="The generated password, until acknowledged",
              tags=TAGS, response=PasswordOut, auth=AUTH, errors=(403, 404),
              description="A secret: needs the scope instances:write and the member role.")
def get_password(principal: Principal, project_id: str, instance_id: str):
    return {"password": lifecycle.pending_password(principal, project_id, instance_id)}


@bp.operation(f"{ONE}/password", "DELETE", summary="Acknowledge (forget) the generated "
              "password", tags=TAGS, status=204, auth=AUTH, errors=(403, 404),
              description="Needs the scope instances:write and the member role.")
def acknowledge_password(principal: Principal, project_id: str, instance_id: str):
    lifecycle.acknowledge_password(principal, project_id, instance_id)
    return None, 204


@bp.operation(f"{ONE}/ssh-keys", "POST", summary="Add an SSH key to a running instance",
              tags=TAGS, body=InstanceSshKeyIn, response=InstanceAccepted, status=202, auth=AUTH,
              errors=ERRORS)
def add_ssh_key(principal: Principal, project_id: str, instance_id: str, body: InstanceSshKeyIn):
    return _accepted(lifecycle.add_ssh_key(principal, project_id, instance_id,
                                           body.public_key))


@bp.operation(f"{ONE}/events", summary="The instance's timeline", tags=TAGS, query=ListQuery,
              response=InstanceEventList, auth=AUTH, errors=(403, 404))
def list_events(principal: Principal, project_id: str, instance_id: str, query: ListQuery):
    rows, cursor = lifecycle.list_events(principal, project_id, instance_id, query.limit,
                                         query.cursor)
    return page_body([InstanceEventOut.of(row) for row in rows], query.limit, cursor)


@bp.operation(f"{ONE}/logs", summary="Console / log output (text)", tags=TAGS,
              query=LogQuery, auth=AUTH, errors=(403, 404, 409, 503), produces="text/plain")
def instance_logs(principal: Principal, project_id: str, instance_id: str, query: LogQuery):
    text = lifecycle.console_log(principal, project_id, instance_id, query.lines)
    return Response(text, mimetype="text/plain")


@bp.operation("/projects/<project_id>/jobs", summary="Jobs of a project", tags=TAGS,
              query=ListQuery, response=JobList, auth=AUTH, errors=(403, 404))
def list_jobs(principal: Principal, project_id: str, query: ListQuery):
    rows, cursor = lifecycle.list_jobs(principal, project_id, None, query.limit, query.cursor)
    return page_body([JobOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/projects/<project_id>/jobs/<job_id>", summary="One job and its progress",
              tags=TAGS, response=JobOut, auth=AUTH, errors=(403, 404))
def get_job(principal: Principal, project_id: str, job_id: str):
    return JobOut.of(lifecycle.get_job(principal, project_id, job_id))
