"""In-app notifications: one row per user and event that concerns them, read or unread,
with the state of the email the important ones also send."""

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True, max_length=40)

    class Event(Base):
        id = CharField(primary_key=True, max_length=40)

    class Notification(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE")
        event = ForeignKeyField(Event, null=True, on_delete="SET NULL")
        type = CharField(max_length=60)
        title = CharField(max_length=200)
        body = TextField(default="")
        link = CharField(max_length=300, default="")
        once_key = CharField(max_length=120, null=True, unique=True)
        read_at = DateTimeField(null=True)
        email_status = CharField(max_length=20, null=True, index=True)
        email_claimed_at = DateTimeField(null=True)
        created_at = DateTimeField()

        class Meta:
            indexes = (
                (("user", "created_at"), False),
                (("user", "read_at"), False),
            )

    db.create_tables([Notification])
