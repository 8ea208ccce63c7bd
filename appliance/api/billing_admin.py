"""The operator's side of billing over JSON: grants, balances, promo codes, settings."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from appliance.api.billing import CreditList, CreditOut
from appliance.api.principal import USER_OR_KEY
from appliance.api.schema import ApiBlueprint, ListQuery, PageInfo, Schema, page_body
from appliance.models import PromoCode
from appliance.services.billing import billing_state, ledger, prepaid, promo
from appliance.services.billing.billing_state import OperatorSettings
from appliance.services.principal import Principal

bp = ApiBlueprint("billing_admin_api", __name__)
TAGS = ("admin",)
AUTH = USER_OR_KEY  # an administrator, or their key with the admin scope
ERRORS = (403, 404, 409)


class GrantIn(Schema):
    user_id: str = Field(min_length=1, max_length=40)
    type: Literal["grant", "adjustment", "refund"] = "grant"
    amount: int = Field(ge=-ledger.MAX_AMOUNT, le=ledger.MAX_AMOUNT,
                        description="Minor units; only an adjustment may be negative.")
    note: str = Field(min_length=1, max_length=ledger.NOTE_MAX,
                      description="Why; the account holder sees it on the ledger.")


class AccountQuery(ListQuery):
    q: str = Field("", max_length=254, description="Part of the email or name.")
    status: Literal["active", "grace", "suspended"] | None = Field(
        None, description="grace: out of credit, not yet suspended; suspended: for billing.")


class AccountOut(Schema):
    user_id: str
    email: str
    display_name: str
    balance: int
    currency: str
    spend_cap: int | None
    status: Literal["active", "grace", "suspended"]


class AccountList(Schema):
    data: list[AccountOut]
    page: PageInfo


class PromoCodeOut(Schema):
    id: str
    code: str
    amount: int
    currency: str
    max_uses: int | None
    uses: int
    once_per_user: bool
    expires_at: dt.datetime | None
    active: bool
    status: Literal["active", "inactive", "expired", "used up"] = Field(
        description="Whether it can be redeemed now: `active`, else why not (switched "
                    "off, past `expires_at`, or `max_uses` reached).")
    note: str
    created_at: dt.datetime

    @classmethod
    def of(cls, row: PromoCode) -> PromoCodeOut:
        return cls(id=row.id, code=row.code, amount=row.amount,
                   currency=billing_state.currency(), max_uses=row.max_uses, uses=row.uses,
                   once_per_user=row.once_per_user, expires_at=row.expires_at,
                   active=row.active, status=promo.status_of(row), note=row.note,
                   created_at=row.created_at)


class PromoCodeList(Schema):
    data: list[PromoCodeOut]
    page: PageInfo


class PromoCodeIn(Schema):
    code: str = Field(min_length=3, max_length=60, description="Stored trimmed and lower-case.")
    amount: int = Field(ge=1, le=ledger.MAX_AMOUNT)
    max_uses: int | None = Field(None, ge=1, le=promo.MAX_USES, description="null: no limit.")
    once_per_user: bool = True
    expires_at: dt.datetime | None = None
    active: bool = True
    note: str = Field("", max_length=ledger.NOTE_MAX)


class PromoCodePatch(Schema):
    amount: int | None = Field(None, ge=1, le=ledger.MAX_AMOUNT)
    max_uses: int | None = Field(None, ge=1, le=promo.MAX_USES)
    expires_at: dt.datetime | None = None
    active: bool | None = None
    note: str | None = Field(None, max_length=ledger.NOTE_MAX)


class BillingSettingsOut(Schema):
    currency: str
    vat_rate_bp: int = Field(description="VAT in basis points: 2000 is 20 %.")
    min_balance: int = Field(description="Balance needed to create or resize an instance.")
    grace_hours: int = Field(description="Hours at or below zero before suspension.")
    low_balance_thresholds: list[int] = Field(description="Alerts a new account starts with.")
    operator_name: str
    operator_address: str
    backup_tier_basic_hourly: int = Field(description="Hourly price of the basic backup "
                                                      "tier, minor units.")
    backup_tier_extended_hourly: int = Field(description="Hourly price of the extended "
                                                         "backup tier, minor units.")
    backup_tier_basic_days: int = Field(description="Days basic keeps each daily backup.")
    backup_tier_extended_days: int = Field(description="Days extended keeps each daily "
                                                       "backup.")
    backup_tier_extended_weeks: int = Field(description="Weeks extended keeps each week's "
                                                        "first backup (0: none).")

    @classmethod
    def of(cls, found: OperatorSettings) -> BillingSettingsOut:
        return cls(currency=found.currency, vat_rate_bp=found.vat_rate_bp,
                   min_balance=found.min_balance, grace_hours=found.grace_hours,
                   low_balance_thresholds=list(found.low_balance_thresholds),
                   operator_name=found.operator_name, operator_address=found.operator_address,
                   backup_tier_basic_hourly=found.backup_tier_basic_hourly,
                   backup_tier_extended_hourly=found.backup_tier_extended_hourly,
                   backup_tier_basic_days=found.backup_tier_basic_days,
                   backup_tier_extended_days=found.backup_tier_extended_days,
                   backup_tier_extended_weeks=found.backup_tier_extended_weeks)


class BillingSettingsIn(Schema):
    """Omitted fields are unchanged."""

    currency: str | None = Field(None, pattern="^[A-Za-z]{3}$")
    vat_rate_bp: int | None = Field(None, ge=0, le=10000)
    min_balance: int | None = Field(None, ge=-ledger.MAX_AMOUNT, le=ledger.MAX_AMOUNT)
    grace_hours: int | None = Field(None, ge=0, le=8760)
    low_balance_thresholds: list[int] | None = Field(None, max_length=10)
    operator_name: str | None = Field(None, max_length=200)
    operator_address: str | None = Field(None, max_length=1000)
    backup_tier_basic_hourly: int | None = Field(None, ge=0, le=1_000_000)
    backup_tier_extended_hourly: int | None = Field(None, ge=0, le=1_000_000)
    backup_tier_basic_days: int | None = Field(None, ge=1, le=366)
    backup_tier_extended_days: int | None = Field(None, ge=1, le=366)
    backup_tier_extended_weeks: int | None = Field(None, ge=0, le=520)


@bp.operation("/admin/billing/credits", "POST", summary="Grant, adjust or refund credit",
              tags=TAGS, body=GrantIn, response=CreditOut, status=201, auth=AUTH,
              errors=ERRORS)
def grant(principal: Principal, body: GrantIn):
    entry = prepaid.grant(principal, body.user_id, body.amount, body.note, type=body.type)
    return CreditOut.of(entry, billing_state.currency())


@bp.operation("/admin/billing/accounts", summary="Every account's balance", tags=TAGS,
              query=AccountQuery, response=AccountList, auth=AUTH, errors=(403,))
def accounts(principal: Principal, query: AccountQuery):
    rows, cursor = prepaid.account_balances(principal, query.q, query.limit, query.cursor,
                                            query.status)
    currency = billing_state.currency()
    data = []
    for user, balance, account in rows:
        status = "active"
        if account is not None and account.suspended_at is not None:
            status = "suspended"
        elif account is not None and account.grace_started_at is not None:
            status = "grace"
        data.append(AccountOut(user_id=user.id, email=user.email,
                               display_name=user.display_name or "", balance=balance,
                               currency=currency,
                               spend_cap=account.spend_cap if account else None,
                               status=status))
    return page_body(data, query.limit, cursor)


@bp.operation("/admin/billing/accounts/<user_id>/credits", summary="One account's ledger",
              tags=TAGS, query=ListQuery, response=CreditList, auth=AUTH, errors=(403, 404))
def account_credits(principal: Principal, user_id: str, query: ListQuery):
    rows, cursor = prepaid.user_credits(principal, user_id, query.limit, query.cursor)
    currency = billing_state.currency()
    return page_body([CreditOut.of(row, currency) for row in rows], query.limit, cursor)


@bp.operation("/admin/billing/settings", summary="The operator's billing settings", tags=TAGS,
              response=BillingSettingsOut, auth=AUTH, errors=(403,))
def get_settings(principal: Principal):
    prepaid.require_admin(principal)
    return BillingSettingsOut.of(billing_state.operator_settings())


@bp.operation("/admin/billing/settings", "PUT", summary="Change billing settings", tags=TAGS,
              body=BillingSettingsIn, response=BillingSettingsOut, auth=AUTH, errors=(403,))
def put_settings(principal: Principal, body: BillingSettingsIn):
    values = body.model_dump(exclude_none=True)
    return BillingSettingsOut.of(prepaid.set_operator_settings(principal, values))


@bp.operation("/admin/promo-codes", summary="Promo codes, newest first", tags=TAGS,
              query=ListQuery, response=PromoCodeList, auth=AUTH, errors=(403,))
def list_promo_codes(principal: Principal, query: ListQuery):
    rows, cursor = promo.list_codes(principal, query.limit, query.cursor)
    return page_body([PromoCodeOut.of(row) for row in rows], query.limit, cursor)


@bp.operation("/admin/promo-codes", "POST", summary="Make a promo code", tags=TAGS,
              body=PromoCodeIn, response=PromoCodeOut, status=201, auth=AUTH, errors=ERRORS)
def create_promo_code(principal: Principal, body: PromoCodeIn):
    return PromoCodeOut.of(promo.create_code(principal, **body.model_dump()))


@bp.operation("/admin/promo-codes/<promo_id>", summary="One promo code", tags=TAGS,
              response=PromoCodeOut, auth=AUTH, errors=(403, 404))
def get_promo_code(principal: Principal, promo_id: str):
    return PromoCodeOut.of(promo.get_code(principal, promo_id))


@bp.operation("/admin/promo-codes/<promo_id>", "PATCH", summary="Change a promo code",
              tags=TAGS, body=PromoCodePatch, response=PromoCodeOut, auth=AUTH, errors=ERRORS,
              description="Only the fields sent change; `max_uses` or `expires_at` null "
                          "removes the limit.")
def update_promo_code(principal: Principal, promo_id: str, body: PromoCodePatch):
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    return PromoCodeOut.of(promo.update_code(principal, promo_id, **changes))


@bp.operation("/admin/promo-codes/<promo_id>", "DELETE", summary="Delete an unused promo code",
              tags=TAGS, status=204, auth=AUTH, errors=ERRORS)
def delete_promo_code(principal: Principal, promo_id: str):
    promo.delete_code(principal, promo_id)
    return None, 204
