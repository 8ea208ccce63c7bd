"""Resource metrics of instances and nodes, sampled from the engines (services/metrics).

`instance_metric` and `node_metric` hold one row per subject, resolution (`step`: 60, 300
or 3600 seconds) and bucket start (`at`, Unix seconds): the sums of the samples taken in
the bucket and their count (`n`; `nr` counts those with rates, which a first sample
after a start lacks), so a coarser bucket is the sum of finer ones and an
average is sum / n. Every sample is added to its minute, 5-minute and hour row at once; a
purge deletes each resolution past its retention. On SQLite the tables are WITHOUT ROWID
(the key is the clustered index: a window is one range read, and so is a purge,
subject by subject; no second index).

`metric_counter` keeps each instance's last reading: the engine's cumulative counters
(CPU time, bytes received and sent), from which the next sample's rates are computed,
and the figures of that sample (what the API shows as the latest).
"""

from peewee import (
    BigIntegerField,
    CharField,
    CompositeKey,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
)


def up(migrator, db):
    sqlite = isinstance(db, SqliteDatabase) or "sqlite" in type(db).__name__.lower()

    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Instance(Base):
        id = CharField(primary_key=True, max_length=40)

    class Node(Base):
        id = CharField(primary_key=True, max_length=40)

    class InstanceMetric(Base):
        instance = ForeignKeyField(Instance, on_delete="CASCADE")
        step = IntegerField()
        at = BigIntegerField()
        n = IntegerField(default=0)
        nr = IntegerField(default=0)  # samples with rates (cpu, rx, tx)
        cpu = BigIntegerField(null=True)  # hundredths of a percent of the plan's vCPUs
        memory = BigIntegerField(null=True)  # bytes used
        rx = BigIntegerField(null=True)  # bytes received per second
        tx = BigIntegerField(null=True)  # bytes sent per second
        disk = BigIntegerField(null=True)  # bytes used

        class Meta:
            primary_key = CompositeKey("instance", "step", "at")
            without_rowid = sqlite

    class NodeMetric(Base):
        node = ForeignKeyField(Node, on_delete="CASCADE")
        step = IntegerField()
        at = BigIntegerField()
        n = IntegerField(default=0)
        load = BigIntegerField(null=True)  # 1-minute load average, hundredths
        memory_used = BigIntegerField(null=True)
        memory_total = BigIntegerField(null=True)
        storage_used = BigIntegerField(null=True)
        storage_total = BigIntegerField(null=True)
        running = BigIntegerField(null=True)  # instances running on the engine

        class Meta:
            primary_key = CompositeKey("node", "step", "at")
            without_rowid = sqlite

    class MetricCounter(Base):
        instance = ForeignKeyField(Instance, primary_key=True, on_delete="CASCADE")
        read_at = FloatField()  # Unix seconds, when the engine was read
        cpu_seconds = FloatField(null=True)
        rx_bytes = BigIntegerField(null=True)
        tx_bytes = BigIntegerField(null=True)
        cpu = BigIntegerField(null=True)
        memory = BigIntegerField(null=True)
        rx = BigIntegerField(null=True)
        tx = BigIntegerField(null=True)
        disk = BigIntegerField(null=True)

    db.create_tables([InstanceMetric, NodeMetric, MetricCounter])
