"""Operations of the appliance itself: the runs of its own backup."""

from peewee import AutoField, BigIntegerField, BooleanField, CharField, TextField

from appliance.db import BaseModel, UTCDateTimeField


class SelfBackupRun(BaseModel):
    """One backup of the appliance (services/ops/selfbackup.py): `trigger` is scheduled
    (the daily task) or manual (`appliance backup`); `status` ok or failed, with `error`.
    `notified`: this failure was told to the administrators (once per failing day)."""

    id = AutoField()
    trigger = CharField(max_length=20)
    status = CharField(max_length=20)
    started_at = UTCDateTimeField()
    finished_at = UTCDateTimeField()
    file = CharField(max_length=1000, default="")  # the archive's path, when it was written
    size_bytes = BigIntegerField(default=0)
    sha256 = CharField(max_length=64, default="")  # of the whole archive file
    error = TextField(default="")
    notified = BooleanField(default=False)

    class Meta:
        indexes = ((("trigger", "started_at"), False),)


class SchedulerLease(BaseModel):
    """Which process runs the periodic tasks (services/ops/leader.py): the one whose
    `holder` is written here, until `expires_at` (renewed well before)."""

    name = CharField(primary_key=True, max_length=40)
    holder = CharField(max_length=80)
    expires_at = UTCDateTimeField()
    acquired_at = UTCDateTimeField()
