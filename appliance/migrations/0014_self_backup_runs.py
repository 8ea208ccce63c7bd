"""Backups of the appliance itself: one row per run (scheduled daily, or `appliance backup`
from a shell), with its outcome, so the dashboard can show the last one and a failure is
told to the administrators once. Adds a table and changes no row."""

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DateTimeField,
    Model,
    TextField,
)


def up(migrator, db):
    class SelfBackupRun(Model):
        id = AutoField()
        trigger = CharField(max_length=20)
        status = CharField(max_length=20)
        started_at = DateTimeField()
        finished_at = DateTimeField()
        file = CharField(max_length=1000, default="")
        size_bytes = BigIntegerField(default=0)
        sha256 = CharField(max_length=64, default="")
        error = TextField(default="")
        notified = BooleanField(default=False)

        class Meta:
            database = db
            legacy_table_names = False
            indexes = ((("trigger", "started_at"), False),)

    db.create_tables([SelfBackupRun])
