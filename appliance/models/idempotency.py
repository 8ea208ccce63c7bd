"""Stored responses of creating requests, replayed for a repeated Idempotency-Key."""

from peewee import CharField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField


class IdempotencyRecord(BaseModel):
    owner = CharField(max_length=40)  # the acting user's id: keys are per account
    key = CharField(max_length=255)
    fingerprint = CharField(max_length=64)  # sha256 of method, path and body
    # The credential and standing the answer was given to (idempotency.authority_of);
    # "" for records from before: the account's own tokens.
    authority = CharField(max_length=120, default="")
    state = CharField(max_length=20)  # in_flight | done
    status = IntegerField(null=True)
    body = TextField(null=True)
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField(index=True)

    class Meta:
        indexes = ((("owner", "key"), True),)
