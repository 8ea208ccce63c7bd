"""Per-account quotas: overrides of the operator's defaults and requests to raise them."""

from peewee import CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User


class LimitOverride(BaseModel):
    user = ForeignKeyField(User, on_delete="CASCADE", backref="limit_overrides")
    resource = CharField(max_length=40)
    value = IntegerField()
    updated_at = UTCDateTimeField()

    class Meta:
        indexes = ((("user", "resource"), True),)


class LimitRequest(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # lrq_...
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="limit_requests")
    resource = CharField(max_length=40)
    current_limit = IntegerField()
    requested = IntegerField()
    reason = TextField(default="")
    status = CharField(max_length=20, default="pending", index=True)  # pending|approved|declined
    decided_by = ForeignKeyField(User, null=True, on_delete="SET NULL",
                                 backref="decided_limit_requests")
    decided_at = UTCDateTimeField(null=True)
    decision_note = TextField(default="")
    created_at = UTCDateTimeField(index=True)
