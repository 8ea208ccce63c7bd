"""Instances, the jobs that change them, and their event timeline."""

from peewee import CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.catalog import Image, Node, Plan
from appliance.models.projects import Project


class Instance(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # ins_...
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="instances")
    name = CharField(max_length=64)
    plan = ForeignKeyField(Plan, on_delete="RESTRICT", backref="instances")
    image = ForeignKeyField(Image, on_delete="RESTRICT", backref="instances")
    node = ForeignKeyField(Node, on_delete="RESTRICT", backref="instances")
    driver_ref = CharField(max_length=200, null=True)  # the engine's id, opaque
    # creating | running | stopped | failed | deleting | deleted
    status = CharField(max_length=20, index=True)
    power_state = CharField(max_length=20, default="unknown")  # as the engine last said
    ipv4 = CharField(max_length=45, null=True)
    ipv6 = CharField(max_length=45, null=True)
    # A generated password, encrypted, until the owner acknowledged seeing it.
    password_sealed = TextField(null=True)
    ssh_keys = TextField(default="[]")  # JSON list of OpenSSH public key lines
    suspended_at = UTCDateTimeField(null=True)  # billing suspension (stopped, kept)
    backup_tier = CharField(max_length=20, default="none")  # none | basic | extended
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
    deleted_at = UTCDateTimeField(null=True)


class Job(BaseModel):
    """One asynchronous operation. Claimed by a worker with a conditional UPDATE and a lease."""

    id = CharField(primary_key=True, max_length=40)  # job_...
    type = CharField(max_length=40)  # instance.create, instance.start, ...
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="jobs")
    instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL", backref="jobs")
    user = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    status = CharField(max_length=20, index=True)  # queued | running | succeeded | failed
    params = TextField(default="{}")  # JSON
    step = IntegerField(default=0)
    total_steps = IntegerField(default=1)
    message = CharField(max_length=300, default="")
    error = TextField(null=True)
    error_code = CharField(max_length=60, null=True)
    attempts = IntegerField(default=0)
    lease_until = UTCDateTimeField(null=True)
    run_after = UTCDateTimeField(null=True)  # a retry waits until then
    created_at = UTCDateTimeField(index=True)
    started_at = UTCDateTimeField(null=True)
    finished_at = UTCDateTimeField(null=True)


class InstanceEvent(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # iev_...
    instance = ForeignKeyField(Instance, on_delete="CASCADE", backref="events")
    job = ForeignKeyField(Job, null=True, on_delete="SET NULL", backref="+")
    type = CharField(max_length=60)
    message = TextField(default="")
    created_at = UTCDateTimeField(index=True)
