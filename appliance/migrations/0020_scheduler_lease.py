"""The scheduler's lease: with several `appliance serve` processes on one PostgreSQL
database, the one holding the `periodic` lease runs the periodic tasks (metering,
invoices, retention, node checks...). Adds a table and changes no row."""

from peewee import CharField, DateTimeField, Model


def up(migrator, db):
    class SchedulerLease(Model):
        name = CharField(primary_key=True, max_length=40)
        holder = CharField(max_length=80)
        expires_at = DateTimeField()
        acquired_at = DateTimeField()

        class Meta:
            database = db
            legacy_table_names = False

    db.create_tables([SchedulerLease])
