"""The prepaid credit ledger: append-only entries whose running balance is the account's.

Every movement of credit - a grant, a Stripe top-up, a promo code, an hour of usage, an
adjustment, a refund - is one `LedgerEntry` with a unique `reference`, posted inside one
write transaction (`BEGIN IMMEDIATE` on SQLite) that reads the account's latest
`balance_after` and inserts the entry with the new one. A second posting with the same
reference returns the first entry and moves nothing, so a retried request, a re-run tick
or a Stripe event delivered twice is credited or charged once. Triggers refuse UPDATE
and DELETE of ledger rows, so `balance(user)` always equals the sum of the entries.

Durability: the appliance runs SQLite with `synchronous=FULL` by default; an operator may
choose NORMAL for everything else, but a ledger transaction switches its connection to
FULL for its duration (`durable()`), so an acknowledged credit or charge survives a power
loss. Batched postings (the metering tick) cost the same either way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from peewee import SqliteDatabase, fn

from appliance.db import database, db_time, insert_statement
from appliance.errors import InvalidRequest
from appliance.models import LedgerEntry, User
from appliance.models.billing import LEDGER_TYPES
from appliance.services import clock, pagination
from appliance.services.billing import billing_state
from appliance.services.events import outbox

# The largest single movement: ten million currency units in minor units.
MAX_AMOUNT = 1_000_000_000
REFERENCE_MAX = 200
NOTE_MAX = 500
_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


@contextmanager
def durable() -> Iterator[None]:
    """A write transaction whose commit is on disk before it returns (synchronous=FULL).

    Nested inside another transaction it joins it; the outermost one sets the pragma.
    """
    db = database.obj
    restore = None
    if isinstance(db, SqliteDatabase) and database.transaction_depth() == 0:
        current = db.execute_sql("PRAGMA synchronous").fetchone()[0]
        if current < _FULL:
            db.execute_sql("PRAGMA synchronous=FULL")
            restore = current
    try:
        with database.atomic():
            yield
    finally:
        if restore is not None:
            db.execute_sql(f"PRAGMA synchronous={int(restore)}")


@dataclass(frozen=True)
class Posting:
    """A ledger line to post in a batch (see `post_many`)."""

    user_id: str
    type: str
    amount: int
    reference: str
    note: str = ""
    project_id: str | None = None
    created_by: str | None = None


def check_amount(amount: int, field: str = "amount", *, allow_zero: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidRequest("The amount is a whole number of minor units.", field=field)
    if abs(amount) > MAX_AMOUNT or (amount == 0 and not allow_zero):
        raise InvalidRequest(f"The amount is a non-zero whole number of minor units of at most "
                             f"{MAX_AMOUNT} either way.", field=field)
    return amount


def _check(posting: Posting) -> None:
    if posting.type not in LEDGER_TYPES:
        raise InvalidRequest(f"type is one of {', '.join(LEDGER_TYPES)}.", field="type")
    check_amount(posting.amount, allow_zero=posting.type == "adjustment")
    if not posting.reference or len(posting.reference) > REFERENCE_MAX:
        raise InvalidRequest("A ledger reference has 1-200 characters.", field="reference")
    if len(posting.note) > NOTE_MAX:
        raise InvalidRequest(f"A note has at most {NOTE_MAX} characters.", field="note")


def post(user_id: str, type: str, amount: int, reference: str, *, note: str = "",
         project_id: str | None = None, created_by: str | None = None) -> LedgerEntry:
    """Post one entry and return it; `entry.is_new` is False when `reference` was posted
    before (then that earlier entry is returned and nothing moves).

    Raises InvalidRequest for an unknown type, a zero or oversized amount, or a bad
    reference. Joins the caller's transaction when there is one. A new credit (see
    `is_credit`) ends a grace period or a suspension for an unpaid balance that the new
    balance settles (`billing_state.credit_landed`) and records a `billing.credited`
    event, in the same transaction; a repeated reference does nothing.
    """
    posting = Posting(user_id, type, amount, reference, note, project_id, created_by)
    _check(posting)
    with durable():
        existing = LedgerEntry.get_or_none(LedgerEntry.reference == reference)
        if existing is not None:
            existing.is_new = False
            return existing
        balance_now = balances([user_id])[user_id]
        entry = LedgerEntry.create(user=user_id, type=type, amount=amount,
                                   balance_after=balance_now + amount, reference=reference,
                                   note=note, project=project_id, created_by=created_by,
                                   created_at=clock.now())
        billing_state.ensure_accounts([user_id])
        billing_state.balances_changed({user_id: entry.balance_after})
        if is_credit(type, amount):
            billing_state.credit_landed(user_id, entry.balance_after)
            _credited(entry)
    entry.is_new = True
    return entry


CREDIT_TYPES = frozenset({"grant", "topup", "promo", "refund", "adjustment"})


def is_credit(type: str, amount: int) -> bool:
    """Whether a posting adds credit: a grant, top-up, promo or refund, or a positive
    adjustment (usage never does)."""
    return type in CREDIT_TYPES and amount > 0


def _credited(entry: LedgerEntry) -> None:
    """The `billing.credited` event of a new credit, inside its posting's transaction.

    The reference is reduced to its kind (`stripe`, `promo`, `grant`, ...): a promo
    reference holds the code, which is not for webhooks.
    """
    outbox.emit("billing.credited", user_id=entry.user_id, data={
        "amount": entry.amount, "currency": billing_state.currency(), "type": entry.type,
        "balance_after": entry.balance_after,
        "reference_type": entry.reference.split(":", 1)[0], "entry_id": entry.id})


def post_many(postings: Sequence[Posting]) -> dict[str, int]:
    """Post a batch whose references are all new (the caller's unique keys guarantee it)
    inside the caller's durable transaction; return each account's new balance.

    A reference that exists after all makes the insert fail (IntegrityError) and the
    whole transaction roll back, never a gap in a balance chain. Meant for usage debits:
    a credit in the batch is refused (ValueError) - post it with `post`, which records
    its `billing.credited` event.
    """
    if not postings:
        return {}
    if database.transaction_depth() == 0:
        raise RuntimeError("post_many must run inside ledger.durable()")
    if any(is_credit(p.type, p.amount) for p in postings):
        raise ValueError("post_many takes debits only; post credits with ledger.post")
    running = balances(sorted({p.user_id for p in postings}))
    now = clock.now()
    created = db_time(now)
    rows = []
    for p in postings:
        running[p.user_id] += p.amount
        rows.append((p.user_id, p.type, p.amount, running[p.user_id], p.reference, p.note,
                     p.created_by, p.project_id, created))
    sql = insert_statement("ledger_entry", ("user_id", "type", "amount", "balance_after",
                                            "reference", "note", "created_by_id",
                                            "project_id", "created_at"))
    database.cursor().executemany(sql, rows)
    billing_state.ensure_accounts(list(running))
    billing_state.balances_changed(running)
    return running


def balances(user_ids: Sequence[str]) -> dict[str, int]:
    """Each account's balance: the balance_after of its latest entry (0 without any)."""
    found = dict.fromkeys(user_ids, 0)
    # One index seek per account (the latest entry), not a scan of its history.
    latest = (LedgerEntry.select(LedgerEntry.balance_after)
              .where(LedgerEntry.user == User.id)
              .order_by(LedgerEntry.id.desc()).limit(1))
    for start in range(0, len(user_ids), 500):
        chunk = list(user_ids[start:start + 500])
        for user_id, balance_after in (User.select(User.id, latest.alias("balance"))
                                       .where(User.id.in_(chunk)).tuples()):
            found[user_id] = balance_after or 0
    return found


def balance(user_id: str) -> int:
    """The account's balance in minor units."""
    row = (LedgerEntry.select(LedgerEntry.balance_after).where(LedgerEntry.user == user_id)
           .order_by(LedgerEntry.id.desc()).first())
    return row.balance_after if row is not None else 0


def recomputed_balance(user_id: str) -> int:
    """The sum of the account's entries (equal to `balance` unless the data was tampered)."""
    return (LedgerEntry.select(fn.COALESCE(fn.SUM(LedgerEntry.amount), 0))
            .where(LedgerEntry.user == user_id).scalar())


def entries(user_id: str, limit: int = 50, cursor: str | None = None,
            type: str | None = None) -> pagination.Page[LedgerEntry]:
    """An account's entries, newest first, one page."""
    query = LedgerEntry.select().where(LedgerEntry.user == user_id)
    if type is not None:
        query = query.where(LedgerEntry.type == type)
    return pagination.page(query, LedgerEntry, limit, cursor)


STATEMENT_COLUMNS = ("id", "created_at", "type", "amount", "balance_after", "currency",
                     "reference", "note")


def statement_csv(user_id: str, currency: str) -> Iterator[str]:
    """The account's whole ledger as CSV, oldest first (streamed in chunks)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(STATEMENT_COLUMNS)
    yield out.getvalue()
    last_id = 0
    while True:
        rows = list(LedgerEntry.select().where(LedgerEntry.user == user_id,
                                               LedgerEntry.id > last_id)
                    .order_by(LedgerEntry.id).limit(1000))
        if not rows:
            return
        out.seek(0)
        out.truncate()
        for row in rows:
            writer.writerow((row.id, clock.isoformat(row.created_at), row.type, row.amount,
                             row.balance_after, currency, row.reference,
                             _csv_safe(row.note)))
        last_id = rows[-1].id
        yield out.getvalue()


def _csv_safe(text: str) -> str:
    """Keep a spreadsheet from running a note as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
