"""Users and everything that proves who they are."""

from peewee import (
    BooleanField,
    CharField,
    ForeignKeyField,
    IntegerField,
    TextField,
)

from appliance.db import BaseModel, UTCDateTimeField


class User(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # usr_...
    email = CharField(max_length=254, unique=True)  # stored lower-cased
    display_name = CharField(max_length=100, default="")
    password_hash = CharField(max_length=255)
    role = CharField(max_length=20, default="user")  # user | admin
    status = CharField(max_length=20, default="active")  # active | suspended
    suspended_reason = TextField(null=True)
    suspended_at = UTCDateTimeField(null=True)
    email_verified_at = UTCDateTimeField(null=True)
    password_changed_at = UTCDateTimeField()
    last_login_at = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def suspended_until(self):
        """When a suspension lifts by itself (its SuspensionEnd), None: lifted by hand.
        A query, made only for a suspended user."""
        if self.status != "suspended":
            return None
        end = SuspensionEnd.get_or_none(SuspensionEnd.user == self.id)
        return end.until if end is not None else None


class SuspensionEnd(BaseModel):
    """When an administrator's suspension of a user lifts by itself (the scheduler's
    lift_ended_suspensions). A table of its own rather than a column of `user`, which
    every request reads."""

    user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE", backref="+")
    until = UTCDateTimeField(index=True)

    class Meta:
        table_name = "suspension_end"


class AuthSession(BaseModel):
    """One sign-in: a browser session (cookie) or an API refresh-token family."""

    id = CharField(primary_key=True, max_length=40)  # ses_...
    user = ForeignKeyField(User, on_delete="CASCADE", index=True, backref="sessions")
    kind = CharField(max_length=20)  # browser | api
    token_hash = CharField(max_length=64, unique=True, null=True)
    csrf_token = CharField(max_length=64, null=True)
    user_agent = CharField(max_length=300, default="")
    ip = CharField(max_length=64, default="")
    created_at = UTCDateTimeField()
    last_used_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()
    revoked_at = UTCDateTimeField(null=True)
    revoked_reason = CharField(max_length=100, null=True)


class RefreshToken(BaseModel):
    session = ForeignKeyField(AuthSession, on_delete="CASCADE", index=True,
                              backref="refresh_tokens")
    token_hash = CharField(max_length=64, unique=True)
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()
    rotated_at = UTCDateTimeField(null=True)


class MfaFactor(BaseModel):
    user = ForeignKeyField(User, on_delete="CASCADE", unique=True)
    secret = CharField(max_length=200)
    confirmed_at = UTCDateTimeField(null=True)
    last_used_step = IntegerField(default=0)
    created_at = UTCDateTimeField()


class RecoveryCode(BaseModel):
    user = ForeignKeyField(User, on_delete="CASCADE", index=True)
    code_hash = CharField(max_length=64)
    used_at = UTCDateTimeField(null=True)


class EmailToken(BaseModel):
    user = ForeignKeyField(User, on_delete="CASCADE", index=True)
    purpose = CharField(max_length=20)  # verify | reset
    token_hash = CharField(max_length=64, unique=True)
    email = CharField(max_length=254)
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()
    used_at = UTCDateTimeField(null=True)


class Invite(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    code_hash = CharField(max_length=64, unique=True)
    email = CharField(max_length=254, null=True)
    created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
    created_at = UTCDateTimeField()
    expires_at = UTCDateTimeField()
    used_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
    used_at = UTCDateTimeField(null=True)


class MailOutbox(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    to_addr = CharField(max_length=254)
    subject = CharField(max_length=300)
    body = TextField()
    status = CharField(max_length=20, index=True)  # queued | sent | failed | held
    error = TextField(null=True)
    attempts = IntegerField(default=0)
    created_at = UTCDateTimeField(index=True)
    sent_at = UTCDateTimeField(null=True)


class AuditLog(BaseModel):
    id = CharField(primary_key=True, max_length=40)
    actor = ForeignKeyField(User, null=True, on_delete="SET NULL", index=True)
    action = CharField(max_length=60, index=True)
    target_type = CharField(max_length=40, null=True)
    target_id = CharField(max_length=40, null=True)
    ip = CharField(max_length=64, default="")
    details = TextField(default="{}")
    success = BooleanField(default=True)
    created_at = UTCDateTimeField(index=True)
