from peewee import CharField, DateTimeField, TextField

from appliance.db import BaseModel


class Setting(BaseModel):
    """An operator setting changed at run time; `value` is JSON. Overrides the config."""

    key = CharField(primary_key=True, max_length=100)
    value = TextField()
    updated_at = DateTimeField()
