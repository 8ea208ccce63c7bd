"""Usage and billing over JSON: the caller's own account.

Money is integer minor units with a `currency` field. Reading needs `billing:read` /
`usage:read` on a key, changing `billing:write`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from flask import Response, stream_with_context
from pydantic import Field

from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import (
    ApiBlueprint,
    ListQuery,
    PageInfo,
    QueryDate,
    Schema,
    page_body,
)
from appliance.models import BillingAccount, BillingAlert, LedgerEntry
from appliance.models.billing import LEDGER_TYPES
from appliance.services import clock
from appliance.services.billing import billing_state, ledger, prepaid, promo, usage
from appliance.services.principal import Principal

bp = ApiBlueprint("billing_api", __name__)
TAGS = ("billing",)
USAGE_TAGS = ("usage",)
AUTH = USER_OR_KEY
LedgerType = Literal["grant", "topup", "promo", "usage", "adjustment", "refund"]
assert set(LEDGER_TYPES) == set(LedgerType.__args__)  # one list of types


class ReadinessOut(Schema):
    can_provision: bool
    reason: Literal["suspended", "below_minimum_balance", "spend_cap_reached"] | None
    shortfall: int = Field(description="Minor units missing to reach the minimum balance.")


class BillingOut(Schema):
    balance: int
    currency: str
    burn_rate_per_day: int = Field(
        description="What a day costs at what is metered now: 24 times the hourly prices "
                    "of the live instances (stopped ones are billed too; nothing for one "
                    "whose plan's monthly cap is reached) and the kept backups' share of "
                    "their GB-month price.")
    burn_rate_last_24h: int = Field(description="What usage did cost over the last 24 "
                                                "hours (the history).")
    month_to_date: int
    projected_run_out_at: dt.datetime | None = Field(
        description="When the balance reaches zero at `burn_rate_per_day`; null when "
                    "nothing is burning, nothing is left, or it is more than 10 years away "
                    "(then `run_out_beyond_horizon` is true).")
    hours_left: float | None = Field(description="Hours until `projected_run_out_at`; null "
                                                 "when that is null.")
    run_out_beyond_horizon: bool = Field(
        description="True when the balance lasts more than 10 years at the current burn "
                    "rate: no date is projected that far.")
    spend_cap: int | None
    minimum_balance: int
    provisioning: ReadinessOut
    status: Literal["active", "grace", "suspended"]
    grace_ends_at: dt.datetime | None
    suspended_at: dt.datetime | None
    suspended_reason: str | None


class CreditOut(Schema):
    id: int
    type: LedgerType
    amount: int
    balance_after: int
    currency: str
    reference: str
    note: str
    project_id: str | None
    created_at: dt.datetime

    @classmethod
    def of(cls, entry: LedgerEntry, currency: str) -> CreditOut:
        return cls(id=entry.id, type=entry.type, amount=entry.amount,
                   balance_after=entry.balance_after, currency=currency,
                   reference=entry.reference, note=entry.note, project_id=entry.project_id,
                   created_at=entry.created_at)


class CreditList(Schema):
    data: list[CreditOut]
    page: PageInfo


class CreditQuery(ListQuery):
    type: LedgerType | None = None


class PromoIn(Schema):
    code: str = Field(min_length=1, max_length=100,
                      description="Trimmed and case-insensitive.")


class PromoOut(Schema):
    credit: CreditOut
    balance: int
    currency: str


class PromoRefusal(Schema):
    code: Literal["promo_not_found", "promo_inactive", "promo_expired",
                  "promo_already_redeemed", "promo_used_up"]
    message: str


class PromoCheckOut(Schema):
    code: str = Field(description="As typed, trimmed and case-folded.")
    valid: bool = Field(description="Whether redeeming it now would credit you.")
    amount: int | None = Field(description="What it credits, in minor units; null for a "
                                           "code that does not exist.")
    currency: str
    expires_at: dt.datetime | None
    refusal: PromoRefusal | None = Field(description="Why not: the error redeeming it "
                                                     "would answer.")


class AlertOut(Schema):
    id: str
    threshold: int
    currency: str
    armed: bool = Field(description="False after it fired, until the balance is back at or "
                                    "above the threshold.")
    fired_at: dt.datetime | None
    created_at: dt.datetime

    @classmethod
    def of(cls, alert: BillingAlert, currency: str) -> AlertOut:
        return cls(id=alert.id, threshold=alert.threshold, currency=currency,
                   armed=alert.armed, fired_at=alert.fired_at, created_at=alert.created_at)


class AlertList(Schema):
    data: list[AlertOut]


class AlertIn(Schema):
    threshold: int = Field(ge=1, le=ledger.MAX_AMOUNT,
                           description="Alert when the balance falls below this.")


class SettingsOut(Schema):
    spend_cap: int | None = Field(description="Per calendar month; null: none.")
    invoice_name: str
    invoice_address: str
    vat_id: str
    currency: str

    @classmethod
    def of(cls, account: BillingAccount) -> SettingsOut:
        return cls(spend_cap=account.spend_cap, invoice_name=account.invoice_name,
                   invoice_address=account.invoice_address, vat_id=account.vat_id,
                   currency=billing_state.currency())


class SettingsIn(Schema):
    spend_cap: int | None = Field(None, ge=0, le=ledger.MAX_AMOUNT)
    invoice_name: str = Field("", max_length=prepaid.TEXT_MAX["invoice_name"])
    invoice_address: str = Field("", max_length=prepaid.TEXT_MAX["invoice_address"])
    vat_id: str = Field("", max_length=prepaid.TEXT_MAX["vat_id"])


class SpendCapIn(Schema):
    spend_cap: int | None = Field(ge=0, le=ledger.MAX_AMOUNT,
                                  description="Minor units per calendar month; null: none.")


@bp.operation("/billing", summary="Balance, burn rate, run-out and readiness", tags=TAGS,
              response=BillingOut, auth=AUTH)
def overview(principal: Principal):
    found = prepaid.overview(principal)
    ready = found.readiness
    return BillingOut(
        balance=found.balance, currency=found.currency,
        burn_rate_per_day=found.burn_rate_per_day, burn_rate_last_24h=found.burn_rate_last_24h,
        month_to_date=found.month_to_date, projected_run_out_at=found.projected_run_out_at,
        hours_left=found.hours_left, run_out_beyond_horizon=found.run_out_beyond_horizon,
        spend_cap=found.spend_cap, minimum_balance=found.minimum_balance,
        provisioning=ReadinessOut(can_provision=ready.can_provision, reason=ready.reason,
                                  shortfall=ready.shortfall),
        status=found.status, grace_ends_at=found.grace_ends_at,
        suspended_at=found.suspended_at, suspended_reason=found.suspended_reason)


@bp.operation("/billing/credits", summary="Your credit ledger, newest first", tags=TAGS,
              query=CreditQuery, response=CreditList, auth=AUTH)
def credits(principal: Principal, query: CreditQuery):
    rows, cursor = prepaid.list_credits(principal, query.limit, query.cursor, query.type)
    currency = billing_state.currency()
    return page_body([CreditOut.of(row, currency) for row in rows], query.limit, cursor)


def csv_response(chunks, filename: str) -> Response:
    return Response(stream_with_context(chunks), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


@bp.operation("/billing/credits/statement.csv", summary="Your whole ledger as CSV", tags=TAGS,
              auth=AUTH, produces="text/csv")
def statement(principal: Principal):
    return csv_response(prepaid.statement_csv(principal), "statement.csv")


@bp.operation("/billing/promo", "POST", summary="Redeem a promo code", tags=TAGS,
              body=PromoIn, response=PromoOut, status=201, auth=AUTH, errors=(404, 409),
              description="404 `promo_not_found`; 409 `promo_inactive`, `promo_expired`, "
                          "`promo_already_redeemed` or `promo_used_up`.")
def redeem_promo(principal: Principal, body: PromoIn):
    entry = promo.redeem(principal, body.code)
    currency = billing_state.currency()
    return PromoOut(credit=CreditOut.of(entry, currency), balance=entry.balance_after,
                    currency=currency)


@bp.operation("/billing/promo/<code>", summary="Check a promo code without redeeming it",
              tags=TAGS, response=PromoCheckOut, auth=AUTH, errors=(400, 403),
              description="Whether you could redeem it now and what it gives, or why not "
                          "(`refusal.code`: the same codes as redeeming). Always 200 for a "
                          "code of 1-60 characters; 400 otherwise.")
def check_promo(principal: Principal, code: str):
    found = promo.check(principal, code)
    refusal = (PromoRefusal(code=found.refusal.code, message=found.refusal.message)
               if found.refusal is not None else None)
    return PromoCheckOut(code=found.code, valid=found.valid, amount=found.amount,
                         currency=billing_state.currency(), expires_at=found.expires_at,
                         refusal=refusal)


@bp.operation("/billing/alerts", summary="Your low-balance alerts", tags=TAGS,
              response=AlertList, auth=AUTH)
def list_alerts(principal: Principal):
    currency = billing_state.currency()
    return {"data": [AlertOut.of(a, currency) for a in prepaid.list_alerts(principal)]}


@bp.operation("/billing/alerts", "POST", summary="Add a low-balance alert", tags=TAGS,
              body=AlertIn, response=AlertOut, status=201, auth=AUTH, errors=(409,))
def create_alert(principal: Principal, body: AlertIn):
    alert = prepaid.create_alert(principal, body.threshold)
    return AlertOut.of(alert, billing_state.currency())


@bp.operation("/billing/alerts/<alert_id>", "DELETE", summary="Delete a low-balance alert",
              tags=TAGS, status=204, auth=AUTH, errors=(404,))
def delete_alert(principal: Principal, alert_id: str):
    prepaid.delete_alert(principal, alert_id)
    return None, 204


@bp.operation("/billing/settings", summary="Your spend cap and invoice details", tags=TAGS,
              response=SettingsOut, auth=AUTH)
def get_settings(principal: Principal):
    return SettingsOut.of(prepaid.account_settings(principal))


@bp.operation("/billing/settings", "PUT", summary="Replace your billing settings", tags=TAGS,
              body=SettingsIn, response=SettingsOut, auth=AUTH)
def put_settings(principal: Principal, body: SettingsIn):
    return SettingsOut.of(prepaid.update_settings(
        principal, spend_cap=body.spend_cap, invoice_name=body.invoice_name,
        invoice_address=body.invoice_address, vat_id=body.vat_id))


@bp.operation("/billing/spend-cap", "PATCH", summary="Set or clear your monthly spend cap",
              tags=TAGS, body=SpendCapIn, response=SettingsOut, auth=AUTH)
def set_spend_cap(principal: Principal, body: SpendCapIn):
    return SettingsOut.of(prepaid.set_spend_cap(principal, body.spend_cap))


# Usage --------------------------------------------------------------------------------


class ProjectFilter(Schema):
    project_id: str | None = Field(None, max_length=40)


class UsageSummaryOut(Schema):
    days: int
    since: dt.date
    active_instances: int = Field(description="Live instances now, running or stopped "
                                              "(both are billed).")
    running_instances: int = Field(description="Of those, the ones running now.")
    instance_hours: int
    amount: int
    currency: str


class ChartQuery(ProjectFilter):
    days: int = Field(30, ge=1, le=usage.MAX_CHART_DAYS)


class ChartPoint(Schema):
    date: dt.date
    quantity: int
    amount: int


class ChartOut(Schema):
    days: int
    currency: str
    data: list[ChartPoint]


class RangeQuery(ProjectFilter):
    date_from: QueryDate | None = Field(None,
                                        description="First UTC day (default: 30 days ago).")
    date_to: QueryDate | None = Field(None, description="Last UTC day (default: today).")


class DailyRow(Schema):
    date: dt.date
    project_id: str | None
    resource: str
    sku: str
    quantity: int
    amount: int


class DailyOut(Schema):
    date_from: dt.date
    date_to: dt.date
    currency: str
    data: list[DailyRow]


class ResourceRow(Schema):
    resource: str
    sku: str
    quantity: int
    amount: int


class ResourcesOut(Schema):
    month: str
    currency: str
    total: int
    data: list[ResourceRow]


@bp.operation("/usage", summary="The last 30 days of usage", tags=USAGE_TAGS,
              query=ProjectFilter, response=UsageSummaryOut, auth=AUTH, errors=(404,))
def usage_summary(principal: Principal, query: ProjectFilter):
    return usage.summary(principal, query.project_id)


@bp.operation("/usage/chart", summary="Usage per day (zeros filled), oldest first",
              tags=USAGE_TAGS, query=ChartQuery, response=ChartOut, auth=AUTH, errors=(404,))
def usage_chart(principal: Principal, query: ChartQuery):
    points = usage.chart(principal, query.days, query.project_id)
    return ChartOut(days=query.days, currency=billing_state.currency(),
                    data=[ChartPoint(date=p.day, quantity=p.quantity, amount=p.amount)
                          for p in points])


@bp.operation("/usage/daily", summary="Usage per day, project, resource and SKU",
              tags=USAGE_TAGS, query=RangeQuery, response=DailyOut, auth=AUTH, errors=(404,))
def usage_daily(principal: Principal, query: RangeQuery):
    date_from, date_to = usage.check_range(query.date_from, query.date_to)
    lines = usage.daily(principal, date_from, date_to, query.project_id)
    return DailyOut(date_from=date_from, date_to=date_to, currency=billing_state.currency(),
                    data=[DailyRow(date=line.day, project_id=line.project_id,
                                   resource=line.resource, sku=line.sku,
                                   quantity=line.quantity, amount=line.amount)
                          for line in lines])


@bp.operation("/usage/resources", summary="This month by resource and SKU, biggest first",
              tags=USAGE_TAGS, query=ProjectFilter, response=ResourcesOut, auth=AUTH,
              errors=(404,))
def usage_resources(principal: Principal, query: ProjectFilter):
    lines = usage.by_resource(principal, query.project_id)
    return ResourcesOut(month=prepaid.month_start(clock.now()).strftime("%Y-%m"),
                        currency=billing_state.currency(),
                        total=sum(line.amount for line in lines),
                        data=[ResourceRow(resource=line.resource, sku=line.sku,
                                          quantity=line.quantity, amount=line.amount)
                              for line in lines])


@bp.operation("/usage/export.csv", summary="Hourly usage records as CSV", tags=USAGE_TAGS,
              query=RangeQuery, auth=AUTH, produces="text/csv", errors=(404,))
def usage_export(principal: Principal, query: RangeQuery):
    chunks = usage.export_csv(principal, query.date_from, query.date_to, query.project_id)
    return csv_response(chunks, "usage.csv")
