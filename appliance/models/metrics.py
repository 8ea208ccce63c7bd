"""Dashboard metrics: one row per account and UTC minute (see services/dashboard_metrics)."""

from peewee import CompositeKey, ForeignKeyField, IntegerField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User


class MetricSample(BaseModel):
    """What an account had in one minute: instances running (sampled once a minute) and
    API requests (counted in memory, added on each flush)."""

    user = ForeignKeyField(User, on_delete="CASCADE", backref="+")
    minute = UTCDateTimeField(index=True)  # start of the UTC minute
    instances_running = IntegerField(default=0)
    api_requests = IntegerField(default=0)

    class Meta:
        primary_key = CompositeKey("user", "minute")
