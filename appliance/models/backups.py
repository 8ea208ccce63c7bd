"""Backups the appliance keeps of instances."""

from peewee import CharField, ForeignKeyField, IntegerField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.catalog import Node
from appliance.models.instances import Instance
from appliance.models.projects import Project


class Backup(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # bak_...
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="backups")
    instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL", backref="backups")
    instance_name = CharField(max_length=64)  # as it was named when backed up
    node = ForeignKeyField(Node, on_delete="RESTRICT", backref="+")
    kind = CharField(max_length=20)  # final: kept by a delete
    status = CharField(max_length=20, index=True)  # creating | available | failed | deleted
    engine_ref = CharField(max_length=300, null=True)  # the driver's archive ref, opaque
    size_gb = IntegerField()  # the plan's disk when taken (what storage is billed by)
    error = CharField(max_length=500, null=True)
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
    deleted_at = UTCDateTimeField(null=True)
