"""Webhooks, their deliveries (one per event and endpoint) and each delivery's attempts."""

from peewee import AutoField, CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.events import Event
from appliance.models.projects import Project


class Webhook(BaseModel):
    """A URL subscribed to event types, owned by a user, optionally for one project.

    The signing secret is sealed (services/sealing.py), never stored in the clear. After
    a rotation the previous secret stays, sealed, until `previous_valid_until`: meanwhile
    deliveries carry a signature with each.
    """

    id = CharField(primary_key=True, max_length=40)  # whk_...
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="webhooks")
    project = ForeignKeyField(Project, null=True, on_delete="CASCADE", index=True,
                              backref="webhooks")
    url = TextField()
    description = CharField(max_length=500, default="")
    event_types = TextField(default='"*"')  # JSON: "*" (every type) or a list of types
    secret_sealed = TextField()
    previous_secret_sealed = TextField(null=True)
    previous_valid_until = UTCDateTimeField(null=True)
    status = CharField(max_length=20, default="active")  # active | paused | disabled
    disabled_reason = CharField(max_length=300, null=True)
    # The first failure since the last success; five days of it disables the webhook.
    failing_since = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()


class WebhookDelivery(BaseModel):
    """One event to one webhook, tried until it succeeds or the retries run out.

    `msg_id` is the `webhook-id` header: the event's id, the same on every attempt and on
    a manual redelivery, so receivers can drop duplicates. Claimed by a dispatcher with a
    conditional UPDATE that sets `lease_until`, like jobs.
    """

    id = CharField(primary_key=True, max_length=40)  # dlv_...
    webhook = ForeignKeyField(Webhook, on_delete="CASCADE", backref="deliveries")
    event = ForeignKeyField(Event, on_delete="CASCADE", backref="+")
    msg_id = CharField(max_length=40)
    trigger = CharField(max_length=20, default="event")  # event | redelivery | test
    status = CharField(max_length=20, default="pending")  # pending | succeeded | failed
    attempts = IntegerField(default=0)
    next_attempt_at = UTCDateTimeField(null=True)
    lease_until = UTCDateTimeField(null=True)
    last_status_code = IntegerField(null=True)
    last_error = TextField(null=True)
    created_at = UTCDateTimeField()
    finished_at = UTCDateTimeField(null=True)

    class Meta:
        indexes = (
            (("status", "next_attempt_at"), False),
            (("webhook", "created_at"), False),
        )


class WebhookAttempt(BaseModel):
    """One HTTP request of a delivery: when, how long, what came back (bounded)."""

    id = AutoField()
    delivery = ForeignKeyField(WebhookDelivery, on_delete="CASCADE", backref="attempt_rows")
    number = IntegerField()
    started_at = UTCDateTimeField()
    duration_ms = IntegerField(default=0)
    status_code = IntegerField(null=True)
    response_excerpt = TextField(default="")  # at most 2 KB of the response body
    error = TextField(null=True)

    class Meta:
        indexes = ((("delivery", "number"), False),)
