"""The operator's overview (`/admin/overview`) and the lists behind its figures that had
none: every account's jobs, webhooks and ledger entries (services/ops/overview.py)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlencode

from pydantic import Field

from appliance.api.billing import CreditOut
from appliance.api.catalog import Engine, NodeOut, PlanOut
from appliance.api.instances import JobOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import API_PREFIX, ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.api.webhooks import WebhookOut
from appliance.models import Job, LedgerEntry, Webhook
from appliance.services.billing import billing_state, books
from appliance.services.instances import nodes, operator
from appliance.services.ops import checklist
from appliance.services.ops import overview as figures
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints

bp = ApiBlueprint("admin_overview_api", __name__)
TAGS = ("admin",)
AUTH = USER_OR_KEY  # an administrator, or their key with the admin scope


def href(path: str, **query: object) -> str:
    """An address in this API, with its query string (None values left out)."""
    args = {name: value for name, value in query.items() if value is not None}
    return API_PREFIX + path + (f"?{urlencode(args)}" if args else "")


class OverviewFigure(Schema):
    count: int
    href: str = Field(description="The list behind the figure, in this API.")


class OverviewAmount(Schema):
    amount: int = Field(description="Minor units of `currency`.")
    currency: str
    href: str = Field(description="The ledger entries behind the figure, in this API.")


class OverviewCapacity(Schema):
    vcpus: int
    memory_mb: int
    disk_gb: int


class OverviewNode(Schema):
    id: str
    name: str
    engine: Engine
    simulated: bool
    enabled: bool
    health: Literal["unknown", "healthy", "unhealthy"]
    health_message: str
    capacity: OverviewCapacity = Field(description="The capacity set for the node.")
    allotted: OverviewCapacity = Field(description="What placement may allot: the capacity "
                                                   "times the node's overcommit ratios.")
    allocated: OverviewCapacity = Field(description="What the plans of its instances take "
                                                    "(stopped ones too).")
    instances: OverviewFigure
    href: str


class OverviewInstances(Schema):
    total: OverviewFigure = Field(description="Every instance not deleted.")
    by_state: dict[str, OverviewFigure] = Field(
        description="creating, running, stopped, failed and deleting; zeros included.")


class OverviewOut(Schema):
    nodes: list[OverviewNode]
    instances: OverviewInstances
    accounts_in_grace: OverviewFigure = Field(description="Out of credit, not yet "
                                                          "suspended.")
    accounts_suspended: OverviewFigure = Field(description="Suspended for billing.")
    users_suspended: OverviewFigure = Field(description="Suspended by an administrator.")
    month: str = Field(description="The UTC month of the money figures, YYYY-MM.")
    credit_added: OverviewAmount = Field(description="Grants, top-ups, promo codes, refunds "
                                                     "and positive adjustments this month.")
    usage_charged: OverviewAmount = Field(description="Usage charged this month.")
    limit_requests_pending: OverviewFigure
    jobs_failed: OverviewFigure = Field(description="Jobs failed in the last 24 hours.")
    webhooks_disabled: OverviewFigure
    mail_failed: OverviewFigure = Field(description="Mail the SMTP server refused or that "
                                                    "could not be sent (retried).")
    mail_held: OverviewFigure = Field(description="Mail kept because no SMTP server is set "
                                                  "up.")
    checklist: dict[str, bool] = Field(
        description="The first-run checklist, each item ticked when done: plans, nodes, "
                    "mail, site, billing, promo.")


def _figure(count: int, path: str, **query: object) -> OverviewFigure:
    return OverviewFigure(count=count, href=href(path, **query))


def _capacity(vcpus: int, memory_mb: int, disk_gb: int) -> OverviewCapacity:
    return OverviewCapacity(vcpus=vcpus, memory_mb=memory_mb, disk_gb=disk_gb)


@bp.operation("/admin/overview", summary="The operator's overview", tags=TAGS,
              response=OverviewOut, auth=AUTH, errors=(403,),
              description="Nodes with health and allocation, instances by state, accounts "
                          "in grace and suspended, this month's credit and usage, pending "
                          "limit requests, failed jobs, disabled webhooks and failing mail. "
                          "Each figure names the list behind it (`href`).")
def overview(principal: Principal):
    found = figures.overview(principal)
    month = found.books.month.name
    return OverviewOut(
        nodes=[OverviewNode(
            id=row.node.id, name=row.node.name, engine=row.node.engine,
            simulated=row.node.simulated, enabled=row.node.enabled, health=row.node.health,
            health_message=row.node.health_message,
            capacity=_capacity(row.node.capacity_vcpus, row.node.capacity_memory_mb,
                               row.node.capacity_disk_gb),
            allotted=_capacity(row.allotted.vcpus, row.allotted.memory_mb,
                               row.allotted.disk_gb),
            allocated=_capacity(row.allocated.vcpus, row.allocated.memory_mb,
                                row.allocated.disk_gb),
            instances=_figure(row.instances, "/admin/instances", node=row.node.id),
            href=href(f"/admin/nodes/{row.node.id}")) for row in found.nodes],
        instances=OverviewInstances(
            total=_figure(found.instances_total, "/admin/instances"),
            by_state={state: _figure(count, "/admin/instances", state=state)
                      for state, count in found.instances_by_state.items()}),
        accounts_in_grace=_figure(found.accounts_in_grace, "/admin/billing/accounts",
                                  status="grace"),
        accounts_suspended=_figure(found.accounts_suspended, "/admin/billing/accounts",
                                   status="suspended"),
        users_suspended=_figure(found.users_suspended, "/admin/users", status="suspended"),
        month=month,
        credit_added=OverviewAmount(amount=found.books.credit, currency=found.books.currency,
                                    href=href("/admin/billing/ledger", kind="credit",
                                              month=month)),
        usage_charged=OverviewAmount(amount=found.books.usage, currency=found.books.currency,
                                     href=href("/admin/billing/ledger", kind="usage",
                                               month=month)),
        limit_requests_pending=_figure(found.limit_requests_pending, "/admin/limit-requests",
                                       status="pending"),
        jobs_failed=_figure(found.jobs_failed, "/admin/jobs", status="failed",
                            within_hours=figures.FAILED_JOBS_HOURS),
        webhooks_disabled=_figure(found.webhooks_disabled, "/admin/webhooks",
                                  status="disabled"),
        mail_failed=_figure(found.mail_failed, "/admin/mail-outbox", status="failed"),
        mail_held=_figure(found.mail_held, "/admin/mail-outbox", status="held"),
        checklist=checklist.checklist(principal).done)


# The lists behind the figures -------------------------------------------------------


class RefOwner(Schema):
    id: str
    email: str


class AdminJobOut(JobOut):
    project_id: str
    instance_name: str | None = Field(description="null when the instance is gone.")
    owner: RefOwner

    @classmethod
    def of_any(cls, job: Job) -> AdminJobOut:
        owner = job.project.created_by
        instance = job.instance if job.instance_id else None
        return cls(**JobOut.of(job).model_dump(), project_id=job.project_id,
                   instance_name=instance.name if instance is not None else None,
                   owner=RefOwner(id=owner.id, email=owner.email))


class AdminJobList(Schema):
    data: list[AdminJobOut]
    page: PageInfo


class AdminJobQuery(ListQuery):
    status: Literal["queued", "running", "succeeded", "failed"] | None = None
    within_hours: int | None = Field(None, ge=1, le=operator.MAX_WITHIN_HOURS,
                                     description="Only jobs finished in the last so many "
                                                 "hours.")


@bp.operation("/admin/jobs", summary="Every account's jobs", tags=TAGS, query=AdminJobQuery,
              response=AdminJobList, auth=AUTH, errors=(403,))
def list_jobs(principal: Principal, query: AdminJobQuery):
    rows, cursor = operator.list_jobs(principal, query.status, query.within_hours,
                                      query.limit, query.cursor)
    return page_body([AdminJobOut.of_any(row) for row in rows], query.limit, cursor)


class AdminWebhookOut(WebhookOut):
    owner: RefOwner

    @classmethod
    def of_any(cls, webhook: Webhook) -> AdminWebhookOut:
        return cls(**WebhookOut.of(webhook).model_dump(),
                   owner=RefOwner(id=webhook.user.id, email=webhook.user.email))


class AdminWebhookList(Schema):
    data: list[AdminWebhookOut]
    page: PageInfo


class AdminWebhookQuery(ListQuery):
    status: Literal["active", "paused", "disabled"] | None = None


@bp.operation("/admin/webhooks", summary="Every account's webhooks", tags=TAGS,
              query=AdminWebhookQuery, response=AdminWebhookList, auth=AUTH, errors=(403,))
def list_webhooks(principal: Principal, query: AdminWebhookQuery):
    rows, cursor = endpoints.list_every_account(principal, query.status, query.limit,
                                                query.cursor)
    return page_body([AdminWebhookOut.of_any(row) for row in rows], query.limit, cursor)


class BooksEntryOut(CreditOut):
    owner: RefOwner

    @classmethod
    def of_any(cls, entry: LedgerEntry, currency: str) -> BooksEntryOut:
        return cls(**CreditOut.of(entry, currency).model_dump(),
                   owner=RefOwner(id=entry.user.id, email=entry.user.email))


class BooksList(Schema):
    data: list[BooksEntryOut]
    page: PageInfo
    month: str
    total: int = Field(description="The sum of every page, positive for both kinds.")
    currency: str


class BooksQuery(ListQuery):
    kind: Literal["credit", "usage"]
    month: str | None = Field(None, pattern=r"^\d{4}-\d{2}$",
                              description="YYYY-MM (UTC); without it, this month.")


@bp.operation("/admin/billing/ledger", summary="Every account's credit or usage in a month",
              tags=TAGS, query=BooksQuery, response=BooksList, auth=AUTH, errors=(403,),
              description="`kind=credit`: what added credit; `kind=usage`: usage charged. "
                          "`total` is what the overview shows for the month.")
def books_entries(principal: Principal, query: BooksQuery):
    rows, cursor = books.entries(principal, query.kind, query.month, query.limit,
                                 query.cursor)
    currency = billing_state.currency()
    period = books.month(query.month)
    return {**page_body([BooksEntryOut.of_any(row, currency) for row in rows], query.limit,
                        cursor),
            "month": period.name, "total": books.total(query.kind, period),
            "currency": currency}


# The checklist's one-click actions ---------------------------------------------------


class StarterPlans(Schema):
    data: list[PlanOut]


class LocalNodes(Schema):
    data: list[NodeOut] = Field(description="The nodes registered now (none when every "
                                            "local engine that answers has one).")


@bp.operation("/admin/plans/starter", "POST", summary="Add three starter plans", tags=TAGS,
              response=StarterPlans, status=201, auth=AUTH, errors=(403, 409),
              description="small, medium and large (1, 2 and 4 vCPUs), priced per hour with "
                          "a monthly cap; a slug already taken is skipped (409 when all "
                          "are).")
def starter_plans(principal: Principal):
    return StarterPlans(data=[PlanOut.of(plan) for plan in
                              checklist.add_starter_plans(principal)]), 201


@bp.operation("/admin/nodes/local", "POST", summary="Register the local engines not yet "
              "registered", tags=TAGS, response=LocalNodes, auth=AUTH, errors=(403, 409),
              description="Each local engine (Incus, Docker) that answers on its socket and "
                          "has no node there yet is registered and checked.")
def local_nodes(principal: Principal):
    return LocalNodes(data=[NodeOut.of(node) for node in
                            nodes.register_missing_local_engines(principal)])
