"""Every account's instances, as the operator sees them and acts on them.

Administrators only (403 `admin_only` for anyone else, 403 `scope_denied` for an
administrator's key without the `admin` scope).

- Reading: `search` finds instances across all projects by name, id, the engine's name
  (`ins-...`), the owner's email or an address, filtered by node, engine, state, owner,
  project and billing suspension; newest first, in cursor pages. Each row carries its
  plan, image, node, project and the project's owner.
- Acting: `power` and `delete` call the owner's own service functions
  (`lifecycle.power`, `lifecycle.delete`) with the administrator's principal marked
  `operator` (`Principal.as_operator`). The same rules hold as for the owner - the states
  an action starts from, one operation at a time, a billing suspension - and the audit row
  names the administrator as actor and the owner beside them. Deleting needs the
  instance's name typed back, for the API as for the dashboard.

The customer routes are untouched: there an administrator who is not a member of the
project is an outsider, and gets 404.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from peewee import JOIN, ModelSelect

from appliance.errors import InvalidRequest, NotFound
from appliance.models import Image, Instance, Job, Node, Plan, Project, User
from appliance.services import clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.instances import lifecycle
from appliance.services.instances.lifecycle import Started
from appliance.services.principal import Principal

STATES = ("creating", "running", "stopped", "failed", "deleting", "deleted")
JOB_STATUSES = ("queued", "running", "succeeded", "failed")
MAX_WITHIN_HOURS = 24 * 90
QUERY_MAX = 254
Owner = User.alias("owner")


@dataclass(frozen=True)
class Filters:
    """What narrows the list; None (or "") means no filter."""

    q: str = ""
    node_id: str | None = None
    engine: str | None = None
    state: str | None = None  # one of STATES; without it, the instances not deleted
    owner_id: str | None = None
    project_id: str | None = None
    suspended: bool | None = None


def _query() -> ModelSelect[Instance]:
    """Instances with their plan, image, node, project and the project's owner joined
    (`row.project.created_by` is the owner's row, read in the same query)."""
    return (Instance.select(Instance, Plan, Image, Node, Project, Owner)
            .join(Plan, on=(Instance.plan == Plan.id))
            .switch(Instance).join(Image, on=(Instance.image == Image.id))
            .switch(Instance).join(Node, on=(Instance.node == Node.id))
            .switch(Instance).join(Project, on=(Instance.project == Project.id))
            .join(Owner, JOIN.INNER, on=(Project.created_by == Owner.id),
                  attr="created_by"))


def _matching(query: ModelSelect[Instance], q: str) -> ModelSelect[Instance]:
    """Instances whose name or owner's email contains `q`, whose id or engine name
    (`ins-...`, what `incus list` or `docker ps` shows) starts with it, or one of whose
    addresses is it or starts with it."""
    needle = q.strip().lower()
    if not needle:
        return query
    if len(needle) > QUERY_MAX:
        raise InvalidRequest(f"A search has at most {QUERY_MAX} characters.", field="q")
    as_id = "ins_" + needle.removeprefix("ins-") if needle.startswith("ins-") else needle
    return query.where((Instance.name.contains(needle))
                       | (Owner.email.contains(needle))
                       | (Instance.id.startswith(as_id))
                       | (Instance.ipv4.startswith(needle))
                       | (Instance.ipv6.startswith(needle)))


def search(principal: Principal, filters: Filters, limit: int = pagination.DEFAULT_LIMIT,
           cursor: str | None = None) -> pagination.Page[Instance]:
    """Instances of every account matching `filters`, newest first: (rows, next cursor).

    400 `invalid_request` naming the field for an unknown state or a bad cursor."""
    require_admin(principal)
    query = _matching(_query(), filters.q)
    if filters.state:
        if filters.state not in STATES:
            raise InvalidRequest(f"state is one of {', '.join(STATES)}.", field="state")
        query = query.where(Instance.status == filters.state)
    else:
        query = query.where(Instance.deleted_at.is_null())
    if filters.node_id:
        query = query.where(Instance.node == filters.node_id)
    if filters.engine:
        query = query.where(Node.engine == filters.engine)
    if filters.owner_id:
        query = query.where(Project.created_by == filters.owner_id)
    if filters.project_id:
        query = query.where(Instance.project == filters.project_id)
    if filters.suspended is not None:
        query = query.where(Instance.suspended_at.is_null(not filters.suspended))
    return pagination.page(query, Instance, limit, cursor)


def get(principal: Principal, instance_id: str) -> Instance:
    """Any instance, deleted ones too (kept as history); 404 `instance_not_found`."""
    require_admin(principal)
    instance = _query().where(Instance.id == instance_id).first()
    if instance is None:
        raise NotFound("No such instance.", code="instance_not_found")
    return instance


def power(principal: Principal, instance_id: str, action: str) -> Started:
    """Start, stop, shut down, reboot or reset anyone's instance, as its owner could."""
    instance = get(principal, instance_id)
    return lifecycle.power(principal.as_operator(), instance.project_id, instance.id, action)


def delete(principal: Principal, instance_id: str, confirm_name: str,
           final_backup: bool = False) -> Started:
    """Delete anyone's instance, as its owner could; `confirm_name` must be its name
    (400 `invalid_request`, field confirm_name, otherwise: nothing is deleted)."""
    instance = get(principal, instance_id)
    if confirm_name.strip() != instance.name:
        raise InvalidRequest("Type the instance's name exactly to confirm.",
                             field="confirm_name")
    return lifecycle.delete(principal.as_operator(), instance.project_id, instance.id,
                            final_backup=final_backup)



# Jobs -----------------------------------------------------------------------------------


def _jobs_query(status: str | None, within_hours: int | None) -> ModelSelect[Job]:
    query = (Job.select(Job, Instance, Project, Owner)
             .join(Instance, JOIN.LEFT_OUTER, on=(Job.instance == Instance.id))
             .switch(Job).join(Project, on=(Job.project == Project.id))
             .join(Owner, JOIN.INNER, on=(Project.created_by == Owner.id),
                   attr="created_by"))
    if status:
        if status not in JOB_STATUSES:
            raise InvalidRequest(f"status is one of {', '.join(JOB_STATUSES)}.",
                                 field="status")
        query = query.where(Job.status == status)
    if within_hours is not None:
        if not 1 <= within_hours <= MAX_WITHIN_HOURS:
            raise InvalidRequest(f"within_hours is 1-{MAX_WITHIN_HOURS}.",
                                 field="within_hours")
        query = query.where(Job.finished_at >= clock.now() - dt.timedelta(hours=within_hours))
    return query


def list_jobs(principal: Principal, status: str | None = None, within_hours: int | None = None,
              limit: int = pagination.DEFAULT_LIMIT,
              cursor: str | None = None) -> pagination.Page[Job]:
    """Every account's jobs, newest first, each with its instance (None when it is gone),
    project and owner; `status` keeps one status, `within_hours` those finished in the
    last that many hours."""
    require_admin(principal)
    return pagination.page(_jobs_query(status, within_hours), Job, limit, cursor)


def count_jobs(status: str, within_hours: int) -> int:
    """How many jobs `list_jobs(status=..., within_hours=...)` lists."""
    return _jobs_query(status, within_hours).count()
