"""API keys and the SSH public keys of an account."""

from peewee import CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField
from appliance.models.accounts import User
from appliance.models.projects import Project


class ApiKey(BaseModel):
    """A key acts as its owner, limited by its scopes, project, expiry and IPs.

    Only the SHA-256 of the secret is stored. After a rotation the previous secret's hash
    stays in `previous_hash` until `previous_valid_until` (the grace period).
    """

    id = CharField(primary_key=True, max_length=40)  # key_...
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="api_keys")
    name = CharField(max_length=100)
    prefix = CharField(max_length=20)  # sk_ + 8 characters, shown in lists
    last_four = CharField(max_length=4)
    secret_hash = CharField(max_length=64, unique=True)
    previous_hash = CharField(max_length=64, null=True, unique=True)
    previous_valid_until = UTCDateTimeField(null=True)
    scopes = TextField()  # space-separated
    project = ForeignKeyField(Project, null=True, on_delete="CASCADE", index=True,
                              backref="api_keys")
    expires_at = UTCDateTimeField(null=True)
    allowed_ips = TextField(null=True)  # space-separated addresses / CIDRs; null: any
    rate_limit_rpm = IntegerField(null=True)  # null: the operator's default
    last_used_at = UTCDateTimeField(null=True)
    last_used_ip = CharField(max_length=64, null=True)
    usage_count = IntegerField(default=0)
    created_at = UTCDateTimeField(index=True)
    rotated_at = UTCDateTimeField(null=True)
    revoked_at = UTCDateTimeField(null=True)


class SshKey(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # ssh_...
    user = ForeignKeyField(User, on_delete="CASCADE", backref="ssh_keys")
    name = CharField(max_length=100)
    key_type = CharField(max_length=40)  # ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, ...
    bits = IntegerField()
    public_key = TextField()  # "type base64" without the comment
    fingerprint = CharField(max_length=60)  # SHA256:...
    created_at = UTCDateTimeField(index=True)

    class Meta:
        indexes = ((("user", "fingerprint"), True),)
