"""The event outbox: one row per state change, written in the change's transaction."""

from peewee import CharField, ForeignKeyField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.projects import Project


class Event(BaseModel):
    """Something that happened, for the events list, webhooks and notifications.

    An event concerns a project (its members see it), an account (`user`: that user sees
    it), or both. Ids sort in the order events were recorded (services/events/outbox.py).
    `data` is JSON and never holds a secret.
    """

    id = CharField(primary_key=True, max_length=40)  # evt_...
    type = CharField(max_length=60)  # instance.created, api_key.revoked, ...
    user = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    project = ForeignKeyField(Project, null=True, on_delete="SET NULL", backref="+")
    data = TextField(default="{}")
    created_at = UTCDateTimeField()

    class Meta:
        indexes = (
            (("created_at", "id"), False),
            (("user", "created_at"), False),
            (("project", "created_at"), False),
            (("type", "created_at"), False),
        )
