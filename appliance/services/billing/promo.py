"""Promo codes: the operator's codes (amount, uses, once per user, expiry) and redeeming one.

A code is trimmed and case-folded wherever it is typed. Redeeming posts a `promo` ledger
entry whose reference names the code and the account (`promo:<code>:<user>`), in the same
durable transaction as the redemption row and the use count, so a retried or concurrent
redemption credits once.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from typing import Any

from peewee import fn

from appliance.errors import ApplianceError, Conflict, InvalidRequest, NotFound
from appliance.models import LedgerEntry, PromoCode, PromoRedemption
from appliance.services import audit, clock, pagination
from appliance.services.accounts.admin import require_admin
from appliance.services.billing import ledger
from appliance.services.ids import new_id
from appliance.services.principal import Principal

CODE = re.compile(r"^[a-z0-9][a-z0-9_-]{2,59}$")
MAX_USES = 1_000_000


def normalise(code: str) -> str:
    return (code or "").strip().casefold()


def _check_code(code: str) -> str:
    code = normalise(code)
    if not CODE.match(code):
        raise InvalidRequest("A promo code has 3-60 letters, digits, - and _.", field="code")
    return code


def _refusal(promo: PromoCode | None, user_id: str) -> ApplianceError | None:
    """Why `user_id` cannot redeem `promo` now (the error redeeming raises), or None.
    `promo_used_up` is also checked again by redeeming's conditional UPDATE."""
    if promo is None:
        return NotFound("No such promo code.", code="promo_not_found", details={"field": "code"})
    if not promo.active:
        return Conflict("This promo code is no longer active.", code="promo_inactive",
                        details={"field": "code"})
    if promo.expires_at is not None and promo.expires_at <= clock.now():
        return Conflict("This promo code has expired.", code="promo_expired",
                        details={"field": "code", "expired_at": promo.expires_at.isoformat()})
    if promo.once_per_user and _redeemed_by(promo, user_id):
        return Conflict("You have already redeemed this promo code.",
                        code="promo_already_redeemed", details={"field": "code"})
    if promo.max_uses is not None and promo.uses >= promo.max_uses:
        return Conflict("This promo code has been used up.", code="promo_used_up",
                        details={"field": "code"})
    return None


def _redeemed_by(promo: PromoCode, user_id: str) -> int:
    return (PromoRedemption.select(fn.COUNT(PromoRedemption.id))
            .where(PromoRedemption.promo == promo, PromoRedemption.user == user_id).scalar())


def _typed(code: str) -> str:
    code = normalise(code)
    if not code or len(code) > 60:
        raise InvalidRequest("Enter a promo code.", field="code")
    return code


@dataclass(frozen=True)
class PromoCheck:
    """What redeeming `code` would do for the caller now, without doing it."""

    code: str
    valid: bool
    amount: int | None  # what it credits (None for a code that does not exist)
    expires_at: dt.datetime | None
    refusal: ApplianceError | None  # what redeeming would answer (its code and message)


def check(principal: Principal, code: str) -> PromoCheck:
    """Whether the caller could redeem `code` now and what it gives, or why not (the
    refusal redeeming would give: promo_not_found, promo_inactive, promo_expired,
    promo_already_redeemed, promo_used_up). Redeems nothing; needs billing:read."""
    principal.require_scope("billing:read")
    code = _typed(code)
    promo = PromoCode.get_or_none(PromoCode.code == code)
    refusal = _refusal(promo, principal.user.id)
    return PromoCheck(code, refusal is None, promo.amount if promo is not None else None,
                      promo.expires_at if promo is not None else None, refusal)


def redeem(principal: Principal, code: str) -> LedgerEntry:
    """Credit the caller's account with the code's amount; returns the ledger entry.
    404 `promo_not_found`; 409 `promo_inactive`, `promo_expired`,
    `promo_already_redeemed` (once per user) or `promo_used_up` (max uses reached).
    """
    principal.require_scope("billing:write")
    code = _typed(code)
    user_id = principal.user.id
    with ledger.durable():
        promo = PromoCode.get_or_none(PromoCode.code == code)
        refusal = _refusal(promo, user_id)
        if refusal is not None:
            raise refusal
        assert promo is not None  # _refusal says promo_not_found otherwise
        mine = _redeemed_by(promo, user_id)
        used = (PromoCode.update(uses=PromoCode.uses + 1, updated_at=clock.now())
                .where(PromoCode.id == promo.id,
                       PromoCode.max_uses.is_null() | (PromoCode.uses < PromoCode.max_uses))
                .execute())
        if not used:
            raise Conflict("This promo code has been used up.", code="promo_used_up",
                           details={"field": "code"})
        number = mine + 1
        reference = f"promo:{code}:{user_id}" + ("" if promo.once_per_user else f":{number}")
        PromoRedemption.create(id=new_id("prr"), promo=promo, user=user_id, number=number,
                               ledger_reference=reference, created_at=clock.now())
        entry = ledger.post(user_id, "promo", promo.amount, reference,
                            note=f"Promo code {code.upper()}")
        audit.record("billing.promo_redeemed", actor=principal.user, ip=principal.ip, code=code,
                     amount=promo.amount)
    return entry


def status_of(promo: PromoCode, now: dt.datetime | None = None) -> str:
    """What redeeming the code would meet now: active, inactive (switched off), expired
    or used up - the order in which `redeem` refuses."""
    if not promo.active:
        return "inactive"
    if promo.expires_at is not None and promo.expires_at <= (now or clock.now()):
        return "expired"
    if promo.max_uses is not None and promo.uses >= promo.max_uses:
        return "used up"
    return "active"


# Operator side ------------------------------------------------------------------------


def list_codes(principal: Principal, limit: int = 50,
               cursor: str | None = None) -> pagination.Page[PromoCode]:
    require_admin(principal)
    return pagination.page(PromoCode.select(), PromoCode, limit, cursor)


def get_code(principal: Principal, promo_id: str) -> PromoCode:
    require_admin(principal)
    promo = PromoCode.get_or_none(PromoCode.id == promo_id)
    if promo is None:
        raise NotFound("No such promo code.", code="promo_not_found")
    return promo


def _check_fields(amount: int | None, max_uses: int | None,
                  expires_at: dt.datetime | None, note: str | None) -> None:
    if amount is not None and (isinstance(amount, bool)
                               or not 1 <= amount <= ledger.MAX_AMOUNT):
        raise InvalidRequest(f"The amount is from 1 to {ledger.MAX_AMOUNT} minor units.",
                             field="amount")
    if max_uses is not None and not 1 <= max_uses <= MAX_USES:
        raise InvalidRequest(f"max_uses is from 1 to {MAX_USES}, or null for no limit.",
                             field="max_uses")
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidRequest("Give expires_at with a time zone (e.g. Z).", field="expires_at")
    if note is not None and len(note) > ledger.NOTE_MAX:
        raise InvalidRequest(f"A note has at most {ledger.NOTE_MAX} characters.", field="note")


def create_code(principal: Principal, *, code: str, amount: int, max_uses: int | None = None,
                once_per_user: bool = True, expires_at: dt.datetime | None = None,
                active: bool = True, note: str = "") -> PromoCode:
    require_admin(principal)
    code = _check_code(code)
    _check_fields(amount, max_uses, expires_at, note)
    now = clock.now()
    with ledger.durable():
        if PromoCode.select().where(PromoCode.code == code).exists():
            raise Conflict("A promo code with this code exists.", code="promo_exists",
                           details={"field": "code"})
        promo = PromoCode.create(id=new_id("prm"), code=code, amount=amount, max_uses=max_uses,
                                 once_per_user=once_per_user, expires_at=expires_at,
                                 active=active, note=note.strip(), created_by=principal.user,
                                 created_at=now, updated_at=now)
        audit.record("billing.promo_created", actor=principal.user, target_type="promo_code",
                     target_id=promo.id, ip=principal.ip, code=code, amount=amount)
    return promo


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET  # the default of update_code: a field left as it is


def update_code(principal: Principal, promo_id: str, *, amount: int | None | _Unset = UNSET,
                max_uses: int | None | _Unset = UNSET,
                expires_at: dt.datetime | None | _Unset = UNSET,
                active: bool | None | _Unset = UNSET,
                note: str | None | _Unset = UNSET) -> PromoCode:
    """Change the given fields (the code itself and once-per-user stay as made). None
    removes the limit of max_uses or expires_at; for the other fields it is refused."""
    changes: dict[str, Any] = {name: value for name, value in (
        ("amount", amount), ("max_uses", max_uses), ("expires_at", expires_at),
        ("active", active), ("note", note)) if value is not UNSET}
    if changes.get("amount", 1) is None:
        raise InvalidRequest("A promo code needs an amount.", field="amount")
    if "note" in changes and changes["note"] is None:  # the column holds text, "" for none
        raise InvalidRequest('A note is text; send "" for none.', field="note")
    if "active" in changes and not isinstance(changes["active"], bool):
        raise InvalidRequest("active is true or false.", field="active")
    _check_fields(changes.get("amount"), changes.get("max_uses"), changes.get("expires_at"),
                  changes.get("note"))
    with ledger.durable():
        promo = get_code(principal, promo_id)
        if changes:
            PromoCode.update(updated_at=clock.now(), **changes).where(
                PromoCode.id == promo.id).execute()
        details: dict[str, Any] = {k: str(v) for k, v in changes.items()}  # the field names
        audit.record("billing.promo_changed", actor=principal.user, target_type="promo_code",
                     target_id=promo.id, ip=principal.ip, **details)
    return PromoCode.get_by_id(promo.id)


def delete_code(principal: Principal, promo_id: str) -> None:
    """Delete a code nobody redeemed; a redeemed one can only be deactivated (409)."""
    with ledger.durable():
        promo = get_code(principal, promo_id)
        if PromoRedemption.select().where(PromoRedemption.promo == promo).exists():
            raise Conflict("This code was redeemed; deactivate it instead.",
                           code="promo_redeemed")
        promo.delete_instance()
        audit.record("billing.promo_deleted", actor=principal.user, target_type="promo_code",
                     target_id=promo.id, ip=principal.ip, code=promo.code)
