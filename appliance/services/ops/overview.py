"""The operator's overview: the figures of the admin home page and `GET /admin/overview`.

Administrators only (403 `admin_only`). Each figure is counted by the same query as the
list behind it, so a figure and its list always agree:

- nodes with their health and what the plans of their instances take of their capacity
  (`nodes.used_capacity`; the node's page);
- instances by state (`operator.search` with `state`);
- accounts in a grace period and suspended for billing (`prepaid.account_balances` with
  `status`), and users suspended by an administrator (`admin.search_users`);
- credit added and usage charged this month (`books.entries` / `books.totals`);
- pending limit requests (`quotas.list_all_requests`);
- jobs failed in the last 24 hours (`operator.list_jobs`);
- disabled webhooks (`endpoints.list_every_account`);
- mail failing to go out (the outbox, status failed; `held` when no SMTP is set up).
"""

from __future__ import annotations

from dataclasses import dataclass

from peewee import fn

from appliance.models import Instance, LimitRequest, MailOutbox, Node, User
from appliance.services.accounts.admin import require_admin
from appliance.services.billing import books, prepaid
from appliance.services.instances import nodes, operator
from appliance.services.principal import Principal
from appliance.services.webhooks import endpoints

FAILED_JOBS_HOURS = 24
LIVE_STATES = tuple(state for state in operator.STATES if state != "deleted")


@dataclass(frozen=True)
class NodeFigures:
    node: Node
    allocated: nodes.Capacity
    instances: int
    allotted: nodes.Capacity  # what placement may hand out: capacity x overcommit


@dataclass(frozen=True)
class Overview:
    nodes: list[NodeFigures]
    instances_by_state: dict[str, int]  # every state but deleted, zeros included
    accounts_in_grace: int
    accounts_suspended: int  # for billing
    users_suspended: int  # by an administrator
    books: books.Totals  # this month
    limit_requests_pending: int
    jobs_failed: int  # in the last FAILED_JOBS_HOURS
    webhooks_disabled: int
    mail_failed: int
    mail_held: int  # kept because no SMTP server is set up

    @property
    def instances_total(self) -> int:
        return sum(self.instances_by_state.values())


def _by_state() -> dict[str, int]:
    counted = dict(Instance.select(Instance.status, fn.COUNT(Instance.id))
                   .where(Instance.deleted_at.is_null()).group_by(Instance.status).tuples())
    return {state: counted.get(state, 0) for state in LIVE_STATES}


def _mail(status: str) -> int:
    return MailOutbox.select().where(MailOutbox.status == status).count()


def overview(principal: Principal) -> Overview:
    require_admin(principal)
    return Overview(
        nodes=[NodeFigures(node, nodes.used_capacity(node), nodes.live_instances(node),
                           nodes.allotted_capacity(node))
               for node in Node.select().order_by(Node.name)],
        instances_by_state=_by_state(),
        accounts_in_grace=prepaid.count_accounts("grace"),
        accounts_suspended=prepaid.count_accounts("suspended"),
        users_suspended=User.select().where(User.status == "suspended").count(),
        books=books.totals(principal),
        limit_requests_pending=LimitRequest.select().where(
            LimitRequest.status == "pending").count(),
        jobs_failed=operator.count_jobs("failed", FAILED_JOBS_HOURS),
        webhooks_disabled=endpoints.count_with_status("disabled"),
        mail_failed=_mail("failed"),
        mail_held=_mail("held"),
    )
