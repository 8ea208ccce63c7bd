"""In-app notifications, made from events for the users they concern."""

from peewee import CharField, ForeignKeyField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.events import Event


class Notification(BaseModel):
    """One message for one user (services/events/notifications.py makes them from events).

    `once_key` (unique, nullable) lets a periodic check notify once per thing, e.g. once
    per expiring API key. `email_status` is null for in-app only, else pending -> sending
    -> sent: the mail is sent after the event's transaction commits, by a sweep that claims
    the row (`email_claimed_at` is the claim's time, so a crashed claim is taken again).
    """

    id = CharField(primary_key=True, max_length=40)  # ntf_...
    user = ForeignKeyField(User, on_delete="CASCADE", backref="+")
    event = ForeignKeyField(Event, null=True, on_delete="SET NULL", backref="+")
    type = CharField(max_length=60)  # the event's type
    title = CharField(max_length=200)
    body = TextField(default="")
    link = CharField(max_length=300, default="")  # a dashboard path
    once_key = CharField(max_length=120, null=True, unique=True)
    read_at = UTCDateTimeField(null=True)
    email_status = CharField(max_length=20, null=True, index=True)
    email_claimed_at = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        indexes = (
            (("user", "created_at"), False),
            (("user", "read_at"), False),
        )
