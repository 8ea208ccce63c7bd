"""Projects and who belongs to them."""

from peewee import BooleanField, CharField, ForeignKeyField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User

ROLES = ("viewer", "member", "admin", "owner")  # each may do what the ones before it may


class Project(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # prj_...
    name = CharField(max_length=100)
    # The project every user is given at signup; it cannot be deleted.
    is_default = BooleanField(default=False)
    created_by = ForeignKeyField(User, on_delete="RESTRICT", backref="created_projects")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
    # Deleted projects are kept (usage and invoices name them) but hidden everywhere.
    deleted_at = UTCDateTimeField(null=True)


class Membership(BaseModel):
    project = ForeignKeyField(Project, on_delete="CASCADE", backref="memberships")
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="memberships")
    role = CharField(max_length=20)  # viewer | member | admin | owner
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        indexes = ((("project", "user"), True),)
