"""Dashboard metrics: per account and UTC minute, the instances running and the API
requests made (kept for 8 days by the `sample_metrics` task)."""

from peewee import CharField, CompositeKey, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True, max_length=40)

    class MetricSample(Base):
        user = ForeignKeyField(User, on_delete="CASCADE")
        minute = DateTimeField(index=True)  # the purge deletes by minute alone
        instances_running = IntegerField(default=0)
        api_requests = IntegerField(default=0)

        class Meta:
            primary_key = CompositeKey("user", "minute")

    db.create_tables([MetricSample])
