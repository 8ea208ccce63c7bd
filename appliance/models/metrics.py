"""Dashboard metrics: one row per account and UTC minute (see services/dashboard_metrics);
instance and node resource metrics with their rollups (see services/metrics)."""

from peewee import BigIntegerField, CompositeKey, FloatField, ForeignKeyField, IntegerField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.catalog import Node
from appliance.models.instances import Instance


class MetricSample(BaseModel):
    """What an account had in one minute: instances running (sampled once a minute) and
    API requests (counted in memory, added on each flush)."""

    user = ForeignKeyField(User, on_delete="CASCADE", backref="+")
    minute = UTCDateTimeField(index=True)  # start of the UTC minute
    instances_running = IntegerField(default=0)
    api_requests = IntegerField(default=0)

    class Meta:
        primary_key = CompositeKey("user", "minute")


class InstanceMetric(BaseModel):
    """Sums of an instance's samples in one bucket of one resolution (migration 0019)."""

    instance = ForeignKeyField(Instance, on_delete="CASCADE", backref="+")
    step = IntegerField()  # seconds: 60, 300 or 3600
    at = BigIntegerField()  # bucket start, Unix seconds
    n = IntegerField(default=0)  # samples added
    nr = IntegerField(default=0)  # of which with rates (cpu, rx, tx: not a first sample)
    cpu = BigIntegerField(null=True)  # hundredths of a percent of the plan's vCPUs
    memory = BigIntegerField(null=True)  # bytes used
    rx = BigIntegerField(null=True)  # bytes received per second
    tx = BigIntegerField(null=True)  # bytes sent per second
    disk = BigIntegerField(null=True)  # bytes used

    class Meta:
        primary_key = CompositeKey("instance", "step", "at")


class NodeMetric(BaseModel):
    """Sums of a node's host samples in one bucket of one resolution."""

    node = ForeignKeyField(Node, on_delete="CASCADE", backref="+")
    step = IntegerField()
    at = BigIntegerField()
    n = IntegerField(default=0)
    load = BigIntegerField(null=True)  # 1-minute load average, hundredths
    memory_used = BigIntegerField(null=True)
    memory_total = BigIntegerField(null=True)
    storage_used = BigIntegerField(null=True)
    storage_total = BigIntegerField(null=True)
    running = BigIntegerField(null=True)

    class Meta:
        primary_key = CompositeKey("node", "step", "at")


class MetricCounter(BaseModel):
    """An instance's last reading: the engine's cumulative counters (the next rates'
    base) and the figures computed from it (as in InstanceMetric: the latest sample)."""

    instance = ForeignKeyField(Instance, primary_key=True, on_delete="CASCADE", backref="+")
    read_at = FloatField()
    cpu_seconds = FloatField(null=True)
    rx_bytes = BigIntegerField(null=True)
    tx_bytes = BigIntegerField(null=True)
    cpu = BigIntegerField(null=True)
    memory = BigIntegerField(null=True)
    rx = BigIntegerField(null=True)
    tx = BigIntegerField(null=True)
    disk = BigIntegerField(null=True)
