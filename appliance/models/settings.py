from peewee import CharField, TextField

from appliance.db import BaseModel, UTCDateTimeField


class Setting(BaseModel):
    """An operator setting changed at run time; `value` is JSON. Overrides the config."""

    key = CharField(primary_key=True, max_length=100)
    value = TextField()
    updated_at = UTCDateTimeField()
