"""Reading usage: the 30-day summary, the daily chart, daily rows, this month by resource
and SKU and by instance, and the hourly CSV export (which names each record's instance as
it was then, `subject_name`).

Usage is the caller's own account's (what is billed to it: the projects it owns). A key
restricted to one project sees that project's usage only; asking for another project is
404 like everywhere else. Charts and summaries read the daily rollup (`usage_daily`,
kept by the metering tick), so they cost the same with ten million hourly records.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass

from peewee import ModelSelect, fn

from appliance.errors import InvalidRequest
from appliance.models import Instance, Project, UsageDaily, UsageRecord
from appliance.services import clock, projects
from appliance.services.billing import billing_state
from appliance.services.principal import Principal

MAX_CHART_DAYS = 90
MAX_RANGE_DAYS = 366
SUMMARY_DAYS = 30


@dataclass(frozen=True)
class DayPoint:
    day: dt.date
    quantity: int
    amount: int


@dataclass(frozen=True)
class Line:
    resource: str
    sku: str
    quantity: int
    amount: int
    project_id: str | None = None
    day: dt.date | None = None
    subject_id: str | None = None
    name: str = ""  # the instance's name in those records ("" before migration 0013)


def _scope(principal: Principal, project_id: str | None) -> str | None:
    """The project to filter on: the key's own, or one the caller may read (else 404)."""
    principal.require_scope("usage:read")
    if principal.project_id is not None:
        project_id = project_id or principal.project_id
    if project_id is not None:
        projects.access(principal, project_id, projects.READ)
    return project_id


def _daily(principal: Principal, project_id: str | None) -> ModelSelect[UsageDaily]:
    query = UsageDaily.select().where(UsageDaily.user == principal.user.id)
    if project_id is not None:
        query = query.where(UsageDaily.project == project_id)
    return query


def _today() -> dt.date:
    return clock.now().astimezone(dt.UTC).date()


def summary(principal: Principal, project_id: str | None = None) -> dict:
    """The last 30 days: instance-hours and amount, and the instances live now (running
    or stopped: `active_instances`) and running now (`running_instances`)."""
    project_id = _scope(principal, project_id)
    since = (_today() - dt.timedelta(days=SUMMARY_DAYS - 1)).isoformat()
    rows = (_daily(principal, project_id)
            .select(UsageDaily.resource, fn.SUM(UsageDaily.quantity), fn.SUM(UsageDaily.amount))
            .where(UsageDaily.day >= since).group_by(UsageDaily.resource).tuples())
    by_resource = {resource: (quantity, amount) for resource, quantity, amount in rows}
    live = (Instance.select().join(Project, on=(Instance.project == Project.id))
            .where(Project.created_by == principal.user.id, Instance.deleted_at.is_null()))
    if project_id is not None:
        live = live.where(Instance.project == project_id)
    return {"days": SUMMARY_DAYS, "since": dt.date.fromisoformat(since),
            "active_instances": live.count(),
            "running_instances": live.where(Instance.status == "running").count(),
            "instance_hours": by_resource.get("instance", (0, 0))[0],
            "amount": sum(amount for _, amount in by_resource.values()),
            "currency": billing_state.currency()}


def chart(principal: Principal, days: int = 30, project_id: str | None = None) -> list[DayPoint]:
    """One point per UTC day, oldest first, today last; days without usage are zero."""
    if isinstance(days, bool) or not 1 <= days <= MAX_CHART_DAYS:
        raise InvalidRequest(f"days is from 1 to {MAX_CHART_DAYS}.", field="days")
    project_id = _scope(principal, project_id)
    first = _today() - dt.timedelta(days=days - 1)
    rows = (_daily(principal, project_id)
            .select(UsageDaily.day, fn.SUM(UsageDaily.quantity), fn.SUM(UsageDaily.amount))
            .where(UsageDaily.day >= first.isoformat()).group_by(UsageDaily.day).tuples())
    found = {day: (quantity, amount) for day, quantity, amount in rows}
    points = []
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        quantity, amount = found.get(day.isoformat(), (0, 0))
        points.append(DayPoint(day, quantity, amount))
    return points


def check_range(date_from: dt.date | None, date_to: dt.date | None) -> tuple[dt.date, dt.date]:
    """Default: the last 30 days. 400 naming the field for a reversed or too long range."""
    date_to = date_to or _today()
    date_from = date_from or date_to - dt.timedelta(days=SUMMARY_DAYS - 1)
    if date_from > date_to:
        raise InvalidRequest("date_from is after date_to.", field="date_from")
    if (date_to - date_from).days + 1 > MAX_RANGE_DAYS:
        raise InvalidRequest(f"A range has at most {MAX_RANGE_DAYS} days.", field="date_to")
    return date_from, date_to


def daily(principal: Principal, date_from: dt.date | None = None,
          date_to: dt.date | None = None, project_id: str | None = None) -> list[Line]:
    """Rows per day, project, resource and SKU in the range, oldest day first."""
    project_id = _scope(principal, project_id)
    date_from, date_to = check_range(date_from, date_to)
    rows = (_daily(principal, project_id)
            .where(UsageDaily.day >= date_from.isoformat(), UsageDaily.day <= date_to.isoformat())
            .order_by(UsageDaily.day, UsageDaily.project, UsageDaily.resource, UsageDaily.sku))
    return [Line(r.resource, r.sku, r.quantity, r.amount, r.project_id,
                 dt.date.fromisoformat(r.day)) for r in rows]


def by_resource(principal: Principal, project_id: str | None = None) -> list[Line]:
    """This calendar month per resource and SKU, the biggest amount first."""
    project_id = _scope(principal, project_id)
    first = _today().replace(day=1).isoformat()
    amount = fn.SUM(UsageDaily.amount)
    rows = (_daily(principal, project_id)
            .select(UsageDaily.resource, UsageDaily.sku, fn.SUM(UsageDaily.quantity), amount)
            .where(UsageDaily.day >= first)
            .group_by(UsageDaily.resource, UsageDaily.sku)
            .order_by(amount.desc(), UsageDaily.resource, UsageDaily.sku).tuples())
    return [Line(resource, sku, quantity, total) for resource, sku, quantity, total in rows]


BY_SUBJECT_MAX = 50


def by_subject(principal: Principal, project_id: str | None = None) -> list[Line]:
    """This calendar month per metered thing (an instance, a backup), under the name it
    had in its records - a renamed instance is a line per name - biggest amount first,
    at most BY_SUBJECT_MAX lines. Reads the month's hourly records of the account."""
    project_id = _scope(principal, project_id)
    start = dt.datetime.combine(_today().replace(day=1), dt.time(), dt.UTC)
    amount = fn.SUM(UsageRecord.amount)
    query = (UsageRecord.select(UsageRecord.subject_id, UsageRecord.subject_name,
                                UsageRecord.resource, UsageRecord.sku,
                                fn.SUM(UsageRecord.quantity), amount)
             .where(UsageRecord.user == principal.user.id, UsageRecord.hour >= start))
    if project_id is not None:
        query = query.where(UsageRecord.project == project_id)
    rows = (query.group_by(UsageRecord.subject_id, UsageRecord.subject_name,
                           UsageRecord.resource, UsageRecord.sku)
            .order_by(amount.desc(), UsageRecord.subject_name, UsageRecord.subject_id)
            .limit(BY_SUBJECT_MAX).tuples())
    return [Line(resource, sku, quantity, total, subject_id=subject_id, name=name or "")
            for subject_id, name, resource, sku, quantity, total in rows]


EXPORT_COLUMNS = ("hour", "project_id", "resource", "subject_id", "sku", "quantity",
                  "unit_price", "amount", "currency", "subject_name")


def export_csv(principal: Principal, date_from: dt.date | None = None,
               date_to: dt.date | None = None, project_id: str | None = None) -> Iterator[str]:
    """Every hourly record in the range as CSV, oldest first, streamed in chunks."""
    project_id = _scope(principal, project_id)
    date_from, date_to = check_range(date_from, date_to)
    start = dt.datetime.combine(date_from, dt.time(), dt.UTC)
    end = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
    currency = billing_state.currency()
    user_id = principal.user.id

    def generate() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(EXPORT_COLUMNS)
        last_id = 0
        while True:
            query = UsageRecord.select().where(UsageRecord.user == user_id,
                                               UsageRecord.hour >= start,
                                               UsageRecord.hour < end,
                                               UsageRecord.id > last_id)
            if project_id is not None:
                query = query.where(UsageRecord.project == project_id)
            rows = list(query.order_by(UsageRecord.id).limit(2000))
            for r in rows:
                writer.writerow((clock.isoformat(r.hour), r.project_id, r.resource,
                                 r.subject_id, r.sku, r.quantity, r.unit_price, r.amount,
                                 currency, r.subject_name))
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            if len(rows) < 2000:
                return
            last_id = rows[-1].id

    return generate()
