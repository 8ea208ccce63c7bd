"""Backups the appliance keeps of instances, and the templates made of them: archive
files in its store (BACKUP_DIR)."""

from peewee import BigIntegerField, BooleanField, CharField, ForeignKeyField, IntegerField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.catalog import Image, Node
from appliance.models.instances import Instance
from appliance.models.projects import Project


class Backup(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # bak_...
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="backups")
    instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL", backref="backups")
    instance_name = CharField(max_length=64)  # as it was named when backed up
    name = CharField(max_length=64, default="")
    node = ForeignKeyField(Node, on_delete="RESTRICT", backref="+")  # taken there
    kind = CharField(max_length=20)  # manual | scheduled | final
    # creating | available | restoring | failed | deleting | deleted
    status = CharField(max_length=20, index=True)
    archive = CharField(max_length=200, null=True)  # the file's name in the store
    size_bytes = BigIntegerField(null=True)  # of the archive file, once written
    sha256 = CharField(max_length=64, null=True)  # of the archive file, hex
    engine_ref = CharField(max_length=300, null=True)  # an engine archive (before 0014)
    # What storage is billed by: the archive's size in GiB rounded up (the plan's disk
    # while it is being taken).
    size_gb = IntegerField()
    disk_gb = IntegerField(default=0)  # the instance's disk when taken
    image = ForeignKeyField(Image, null=True, on_delete="SET NULL", backref="+")
    error = CharField(max_length=500, null=True)
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
    expires_at = UTCDateTimeField(null=True)  # scheduled backups: pruned then
    weekly = BooleanField(default=False)  # a scheduled backup kept as its ISO week's
    deleted_at = UTCDateTimeField(null=True)


class Template(BaseModel):
    """A project's own image made from a backup: a copy of its archive, in the store's
    templates/ folder, that outlives the backup and its instance."""

    id = CharField(primary_key=True, max_length=40)  # tpl_...
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="templates")
    name = CharField(max_length=64)
    # creating | available | failed | deleting | deleted
    status = CharField(max_length=20, index=True)
    source_instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL", backref="+")
    source_instance_name = CharField(max_length=64)
    source_backup = ForeignKeyField(Backup, null=True, on_delete="SET NULL", backref="+")
    node = ForeignKeyField(Node, on_delete="RESTRICT", backref="+")  # its engine's
    archive = CharField(max_length=200, null=True)  # the file's name in the store
    size_bytes = BigIntegerField(null=True)
    sha256 = CharField(max_length=64, null=True)
    size_gb = IntegerField()  # billed and counted: the archive's size in GiB rounded up
    disk_gb = IntegerField(default=0)  # the least disk a plan making an instance needs
    image = ForeignKeyField(Image, null=True, on_delete="SET NULL", backref="+")
    error = CharField(max_length=500, null=True)
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
    deleted_at = UTCDateTimeField(null=True)


class BackupTierPeriod(BaseModel):
    """A stretch of time an instance had a paid backup tier: metered by the hour."""

    id = CharField(primary_key=True, max_length=40)  # btp_...
    instance = ForeignKeyField(Instance, on_delete="CASCADE", backref="+")
    project = ForeignKeyField(Project, on_delete="RESTRICT", backref="+")
    tier = CharField(max_length=20)  # basic | extended
    started_at = UTCDateTimeField()
    ended_at = UTCDateTimeField(null=True)  # another tier chosen (or the instance deleted)

    class Meta:
        table_name = "backup_tier_period"
