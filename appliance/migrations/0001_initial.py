"""Operator settings that can be changed at run time (branding, signup, ...)."""

from peewee import CharField, DateTimeField, Model, TextField


def up(migrator, db):
    class Setting(Model):
        key = CharField(primary_key=True, max_length=100)
        value = TextField()  # JSON
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "setting"

    db.create_tables([Setting])
