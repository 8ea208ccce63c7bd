"""The event outbox, webhooks, their deliveries and delivery attempts."""

from peewee import (
    AutoField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True, max_length=40)

    class Project(Base):
        id = CharField(primary_key=True, max_length=40)

    class Event(Base):
        id = CharField(primary_key=True, max_length=40)
        type = CharField(max_length=60)
        user = ForeignKeyField(User, null=True, on_delete="SET NULL")
        project = ForeignKeyField(Project, null=True, on_delete="SET NULL")
        data = TextField(default="{}")
        created_at = DateTimeField()

        class Meta:
            indexes = (
                (("created_at", "id"), False),
                (("user", "created_at"), False),
                (("project", "created_at"), False),
                (("type", "created_at"), False),
            )

    class Webhook(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        project = ForeignKeyField(Project, null=True, on_delete="CASCADE", index=True)
        url = TextField()
        description = CharField(max_length=500, default="")
        event_types = TextField(default='"*"')
        secret_sealed = TextField()
        previous_secret_sealed = TextField(null=True)
        previous_valid_until = DateTimeField(null=True)
        status = CharField(max_length=20, default="active")
        disabled_reason = CharField(max_length=300, null=True)
        failing_since = DateTimeField(null=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class WebhookDelivery(Base):
        id = CharField(primary_key=True, max_length=40)
        webhook = ForeignKeyField(Webhook, on_delete="CASCADE")
        event = ForeignKeyField(Event, on_delete="CASCADE")
        msg_id = CharField(max_length=40)
        trigger = CharField(max_length=20, default="event")
        status = CharField(max_length=20, default="pending")
        attempts = IntegerField(default=0)
        next_attempt_at = DateTimeField(null=True)
        lease_until = DateTimeField(null=True)
        last_status_code = IntegerField(null=True)
        last_error = TextField(null=True)
        created_at = DateTimeField()
        finished_at = DateTimeField(null=True)

        class Meta:
            indexes = (
                (("status", "next_attempt_at"), False),
                (("webhook", "created_at"), False),
            )

    class WebhookAttempt(Base):
        id = AutoField()
        delivery = ForeignKeyField(WebhookDelivery, on_delete="CASCADE")
        number = IntegerField()
        started_at = DateTimeField()
        duration_ms = IntegerField(default=0)
        status_code = IntegerField(null=True)
        response_excerpt = TextField(default="")
        error = TextField(null=True)

        class Meta:
            indexes = ((("delivery", "number"), False),)

    db.create_tables([Event, Webhook, WebhookDelivery, WebhookAttempt])
