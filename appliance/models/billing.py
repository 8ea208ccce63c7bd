"""Usage and billing: the credit ledger, usage records, alerts, promo codes.

Money is integer minor units of the operator's currency (a billing setting).
"""

from peewee import AutoField, BooleanField, CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.projects import Project

LEDGER_TYPES = ("grant", "topup", "promo", "usage", "adjustment", "refund")


class LedgerEntry(BaseModel):
    """One movement of an account's credit. Append-only: database triggers refuse UPDATE
    and DELETE; `reference` is unique, so a posting is made once whatever retries."""

    id = AutoField()  # also the order of an account's entries
    user = ForeignKeyField(User, on_delete="RESTRICT", backref="+")  # the billed account
    type = CharField(max_length=20)  # LEDGER_TYPES
    amount = IntegerField()  # signed: credits positive, usage negative
    balance_after = IntegerField()
    reference = CharField(max_length=200, unique=True)  # usage:<subject>:<hour>, promo:..., ...
    note = TextField(default="")
    created_by = ForeignKeyField(User, null=True, on_delete="RESTRICT", backref="+")
    project = ForeignKeyField(Project, null=True, on_delete="RESTRICT", backref="+")
    created_at = UTCDateTimeField(index=True)


class UsageRecord(BaseModel):
    """One metered hour of one thing (an instance; later backups and templates by GB)."""

    id = AutoField()
    user = ForeignKeyField(User, on_delete="RESTRICT", backref="+")  # the project's owner
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="+")
    subject_id = CharField(max_length=40)  # ins_... (bak_..., tpl_... for storage)
    # The instance's name when the hour was recorded (a backup: its instance's); "" in
    # records made before migration 0013.
    subject_name = CharField(max_length=64, default="")
    resource = CharField(max_length=40)  # instance
    sku = CharField(max_length=60)  # the plan's slug
    hour = UTCDateTimeField()  # start of the UTC hour
    quantity = IntegerField()  # instance-hours (GB-hours for storage)
    unit_price = IntegerField()
    amount = IntegerField()  # after the monthly cap
    created_at = UTCDateTimeField()

    class Meta:
        indexes = ((("subject_id", "resource", "hour"), True),
                   (("user", "hour"), False),
                   (("project", "hour"), False))


class UsageDaily(BaseModel):
    """Usage summed per account, project, UTC day, resource and SKU (kept by the tick)."""

    id = AutoField()
    user = ForeignKeyField(User, on_delete="RESTRICT", backref="+")
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="+")
    day = CharField(max_length=10)  # YYYY-MM-DD
    resource = CharField(max_length=40)
    sku = CharField(max_length=60)
    quantity = IntegerField(default=0)
    amount = IntegerField(default=0)

    class Meta:
        indexes = ((("user", "day", "project", "resource", "sku"), True),)


class UsageMeter(BaseModel):
    """Where metering of one thing stands: its last recorded hour and this month's sum."""

    subject_id = CharField(max_length=40)
    resource = CharField(max_length=40)
    last_hour = UTCDateTimeField()
    sku = CharField(max_length=60)
    month = CharField(max_length=7)  # YYYY-MM of last_hour
    month_amount = IntegerField(default=0)  # charged for (subject, sku) in that month
    closed = BooleanField(default=False)  # the subject is gone and every hour is recorded

    class Meta:
        primary_key = False
        indexes = ((("subject_id", "resource"), True),)


class BillingAccount(BaseModel):
    """An account's billing preferences and enforcement state (grace, suspension)."""

    user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE", backref="+")
    spend_cap = IntegerField(null=True)  # per calendar month; null: none
    invoice_name = CharField(max_length=200, default="")
    invoice_address = TextField(default="")
    vat_id = CharField(max_length=40, default="")
    grace_started_at = UTCDateTimeField(null=True)
    suspended_at = UTCDateTimeField(null=True)
    suspended_reason = CharField(max_length=40, null=True)  # balance | spend_cap
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()


class BillingAlert(BaseModel):
    """Fires once when the balance falls below `threshold`; re-arms when it rises above."""

    id = CharField(primary_key=True, max_length=40)  # bal_...
    user = ForeignKeyField(User, on_delete="CASCADE", backref="+")
    threshold = IntegerField()
    armed = BooleanField(default=True)
    fired_at = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField(index=True)

    class Meta:
        indexes = ((("user", "threshold"), True),)


class PromoCode(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # prm_...
    code = CharField(max_length=60, unique=True)  # trimmed, case-folded
    amount = IntegerField()
    max_uses = IntegerField(null=True)  # null: unlimited
    uses = IntegerField(default=0)
    once_per_user = BooleanField(default=True)
    expires_at = UTCDateTimeField(null=True)
    active = BooleanField(default=True)
    note = TextField(default="")
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()


class PromoRedemption(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # prr_...
    promo = ForeignKeyField(PromoCode, on_delete="RESTRICT", backref="redemptions")
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="+")
    number = IntegerField(default=1)  # the user's n-th use (always 1 when once per user)
    ledger_reference = CharField(max_length=200)
    created_at = UTCDateTimeField(index=True)

    class Meta:
        indexes = ((("promo", "user", "number"), True),)
