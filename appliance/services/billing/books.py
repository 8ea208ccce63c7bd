"""The operator's books: every account's ledger entries of one kind in one calendar month,
and their totals. Administrators only (403 `admin_only`).

Kinds:

- `credit`: what added credit - grants, top-ups, promo codes, refunds and positive
  adjustments (`ledger.is_credit`);
- `usage`: usage charged. The ledger holds these as negative amounts; totals here are
  the positive sum charged.

A month is a UTC calendar month, written YYYY-MM; without one, the current month. The
overview's figures are `totals` of these same queries, so a figure always matches the
list behind it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from peewee import ModelSelect, fn

from appliance.errors import InvalidRequest
from appliance.models import LedgerEntry, User
from appliance.services import clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.billing import billing_state, ledger
from appliance.services.principal import Principal

KINDS = ("credit", "usage")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Month:
    """A UTC calendar month: its name (YYYY-MM) and [start, end)."""

    name: str
    start: dt.datetime
    end: dt.datetime


def month(name: str | None = None) -> Month:
    """The month named YYYY-MM, or the current one; 400 naming `month` otherwise."""
    if not name:
        now = clock.now()
        year, number = now.year, now.month
    else:
        found = _MONTH.match(name)
        if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 1970:
            raise InvalidRequest("A month is written YYYY-MM.", field="month")
        year, number = int(found.group(1)), int(found.group(2))
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    end = dt.datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=dt.UTC)
    return Month(f"{year:04d}-{number:02d}", start, end)


def _query(kind: str, period: Month) -> ModelSelect[LedgerEntry]:
    if kind not in KINDS:
        raise InvalidRequest(f"kind is one of {', '.join(KINDS)}.", field="kind")
    query = LedgerEntry.select(LedgerEntry, User).join(
        User, on=(LedgerEntry.user == User.id)).where(
        LedgerEntry.created_at >= period.start, LedgerEntry.created_at < period.end)
    if kind == "credit":
        return query.where(LedgerEntry.type.in_(sorted(ledger.CREDIT_TYPES)),
                           LedgerEntry.amount > 0)
    return query.where(LedgerEntry.type == "usage")


def entries(principal: Principal, kind: str, month_name: str | None = None,
            limit: int = pagination.DEFAULT_LIMIT,
            cursor: str | None = None) -> pagination.Page[LedgerEntry]:
    """Every account's entries of `kind` in the month, newest first, each with its
    account's row joined (`entry.user`)."""
    require_admin(principal)
    return pagination.page(_query(kind, month(month_name)), LedgerEntry, limit, cursor)


def total(kind: str, period: Month) -> int:
    """The sum of the month's entries of `kind`, positive for both kinds (minor units)."""
    query = _query(kind, period)
    amount = query.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0)).scalar() or 0
    return -amount if kind == "usage" else amount


@dataclass(frozen=True)
class Totals:
    month: Month
    currency: str
    credit: int
    usage: int


def totals(principal: Principal, month_name: str | None = None) -> Totals:
    """Credit added and usage charged in the month, over every account."""
    require_admin(principal)
    period = month(month_name)
    return Totals(period, billing_state.currency(), total("credit", period),
                  total("usage", period))
