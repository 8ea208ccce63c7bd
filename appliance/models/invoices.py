"""Monthly invoices (statements) and Stripe Checkout top-ups.

Money is integer minor units of the invoice's `currency`. An invoice and its lines never
change once written: database triggers refuse UPDATE and DELETE (migration 0008).
"""

from peewee import AutoField, BooleanField, CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User


class InvoiceCounter(BaseModel):
    """The last invoice number handed out in a year; raised with each invoice insert."""

    year = IntegerField(primary_key=True)
    last_number = IntegerField()


class InvoiceRun(BaseModel):
    """A month whose invoices were all issued: later checks of that month stop here."""

    period_start = UTCDateTimeField(primary_key=True)
    invoices = IntegerField()  # how many the month has
    finished_at = UTCDateTimeField()


class Invoice(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # inv_...
    user = ForeignKeyField(User, on_delete="RESTRICT", backref="+")
    number = CharField(max_length=20, unique=True)  # YYYY-NNNNNN
    year = IntegerField()
    sequence = IntegerField()
    period_start = UTCDateTimeField()  # first instant of the month (UTC)
    period_end = UTCDateTimeField()  # first instant of the next month (exclusive)
    status = CharField(max_length=20, default="issued")
    currency = CharField(max_length=3)
    subtotal = IntegerField()  # net of VAT
    vat_rate_bp = IntegerField()
    vat_amount = IntegerField()
    total = IntegerField()  # what the lines add up to (VAT included)
    credits_applied = IntegerField()
    amount_due = IntegerField()
    seller_name = CharField(max_length=200)
    seller_address = TextField(default="")
    buyer_name = CharField(max_length=200, default="")
    buyer_email = CharField(max_length=320, default="")
    buyer_address = TextField(default="")
    buyer_vat_id = CharField(max_length=40, default="")
    issued_at = UTCDateTimeField()
    created_at = UTCDateTimeField(index=True)  # = issued_at; the list order

    class Meta:
        indexes = ((("user", "period_start"), True),
                   (("year", "sequence"), True))


class InvoiceLine(BaseModel):
    id = AutoField()
    invoice = ForeignKeyField(Invoice, on_delete="RESTRICT", backref="lines")
    position = IntegerField()
    resource = CharField(max_length=40)
    sku = CharField(max_length=60)
    description = CharField(max_length=300)
    hours = IntegerField()  # quantity: instance-hours (GB-hours for storage)
    unit_price = IntegerField()
    amount = IntegerField()  # after the monthly cap
    cap_applied = BooleanField(default=False)  # the monthly cap made `amount` smaller


class StripeTopup(BaseModel):
    """A Stripe Checkout Session for a top-up; `credited_at` is set once, when paid."""

    session_id = CharField(primary_key=True, max_length=255)  # cs_...
    user = ForeignKeyField(User, on_delete="RESTRICT", backref="+")
    amount = IntegerField()
    currency = CharField(max_length=3)
    event_id = CharField(max_length=255, null=True)  # evt_... that credited it
    ledger_reference = CharField(max_length=200, null=True)
    created_at = UTCDateTimeField()
    credited_at = UTCDateTimeField(null=True)
