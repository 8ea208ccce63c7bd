"""Every account's instances for administrators (`/admin/instances/...`): search them and
act on them as their owners could (services/instances/operator.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from appliance.api.catalog import Engine
from appliance.api.instances import InstanceOut, JobOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import Instance, Job
from appliance.services.instances import lifecycle, operator
from appliance.services.instances.lifecycle import Started
from appliance.services.principal import Principal

bp = ApiBlueprint("admin_instances_api", __name__)
TAGS = ("admin",)
AUTH = USER_OR_KEY  # an administrator, or their key with the admin scope
ONE = "/admin/instances/<instance_id>"

State = Literal["creating", "running", "stopped", "failed", "deleting", "deleted"]


class OwnerRef(Schema):
    id: str
    email: str
    display_name: str


class ProjectRef(Schema):
    id: str
    name: str


class AdminInstanceOut(InstanceOut):
    """An instance with the project it belongs to and that project's owner."""

    project: ProjectRef
    owner: OwnerRef
    engine_name: str = Field(description="Its name on the engine (`incus list`, `docker ps`).")

    @classmethod
    def of_any(cls, instance: Instance, job: Job | None = None) -> AdminInstanceOut:
        project, owner = instance.project, instance.project.created_by
        return cls(**InstanceOut.of(instance, job).model_dump(),
                   project=ProjectRef(id=project.id, name=project.name),
                   owner=OwnerRef(id=owner.id, email=owner.email,
                                  display_name=owner.display_name),
                   engine_name=lifecycle.engine_name(instance.id))


class AdminInstanceList(Schema):
    data: list[AdminInstanceOut]
    page: PageInfo


class AdminInstanceQuery(ListQuery):
    q: str = Field("", max_length=operator.QUERY_MAX,
                   description="Part of the name or of the owner's email; the start of the "
                               "id (ins_...), of the engine's name (ins-...) or of an "
                               "address.")
    node: str | None = Field(None, max_length=40, description="A node id.")
    engine: Engine | None = None
    state: State | None = Field(None, description="Without it: every instance not deleted.")
    owner: str | None = Field(None, max_length=40, description="The owner's user id.")
    project: str | None = Field(None, max_length=40, description="A project id.")
    suspended: bool | None = Field(None, description="Suspended for billing, or not.")


class AdminAccepted(Schema):
    """202: the operation is queued; follow `job` (GET /admin/instances/{id})."""

    instance: AdminInstanceOut
    job: JobOut


class AdminDeleteQuery(Schema):
    confirm_name: str = Field(min_length=1, max_length=lifecycle.NAME_MAX,
                              description="The instance's name, typed back: nothing is "
                                          "deleted when it differs (400).")
    final_backup: bool = Field(False, description="Keep an archive of it first, as the "
                                                  "owner's delete can.")


def _accepted(started: Started):
    return {"instance": AdminInstanceOut.of_any(started.instance, started.job),
            "job": JobOut.of(started.job)}, 202


@bp.operation("/admin/instances", summary="Every account's instances", tags=TAGS,
              query=AdminInstanceQuery, response=AdminInstanceList, auth=AUTH,
              errors=(403,),
              description="Search by name, id, engine name, owner email or address, and "
                          "filter by node, engine, state, owner, project and suspension. "
                          "Newest first, in cursor pages.")
def list_instances(principal: Principal, query: AdminInstanceQuery):
    rows, cursor = operator.search(principal, operator.Filters(
        q=query.q, node_id=query.node, engine=query.engine, state=query.state,
        owner_id=query.owner, project_id=query.project, suspended=query.suspended),
        query.limit, query.cursor)
    running = lifecycle.current_jobs([row.id for row in rows])
    return page_body([AdminInstanceOut.of_any(row, running.get(row.id)) for row in rows],
                     query.limit, cursor)


@bp.operation(ONE, summary="Anyone's instance", tags=TAGS, response=AdminInstanceOut,
              auth=AUTH, errors=(403, 404))
def get_instance(principal: Principal, instance_id: str):
    instance = operator.get(principal, instance_id)
    return AdminInstanceOut.of_any(instance,
                                   lifecycle.current_jobs([instance.id]).get(instance.id))


@bp.operation(ONE, "DELETE", summary="Delete anyone's instance (202 with its job)",
              tags=TAGS, query=AdminDeleteQuery, response=AdminAccepted, status=202,
              auth=AUTH, errors=(402, 403, 404, 409, 503),
              description="As the owner's delete, done as the administrator and audited "
                          "with both identities. `confirm_name` must be the instance's "
                          "name. A key needs the scopes admin, instances:read and "
                          "instances:delete.")
def delete_instance(principal: Principal, instance_id: str, query: AdminDeleteQuery):
    return _accepted(operator.delete(principal, instance_id, query.confirm_name,
                                     final_backup=query.final_backup))


def _power_view(action: str):
    def view(principal: Principal, instance_id: str):
        return _accepted(operator.power(principal, instance_id, action))

    view.__name__ = f"{action}_instance"
    return view


for _action, _summary in (("start", "Power on"), ("stop", "Power off (hard)"),
                          ("shutdown", "Shut down gracefully"), ("reboot", "Reboot"),
                          ("reset", "Reset (hard restart)")):
    bp.operation(f"{ONE}/{_action}", "POST", summary=f"{_summary} anyone's instance",
                 tags=TAGS, response=AdminAccepted, status=202, auth=AUTH,
                 errors=(402, 403, 404, 409),
                 description="As the owner's power action, done as the administrator and "
                             "audited with both identities. 409 invalid_state or "
                             "operation_in_progress as for the owner; 402 while the "
                             "instance is suspended for billing. A key needs the scopes "
                             "admin, instances:read and instances:write.")(_power_view(_action))
