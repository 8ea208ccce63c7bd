"""Accounts: users, sessions and refresh tokens, MFA, email tokens, invites, mail, audit."""

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True, max_length=40)
        email = CharField(max_length=254, unique=True)
        display_name = CharField(max_length=100, default="")
        password_hash = CharField(max_length=255)
        role = CharField(max_length=20, default="user")
        status = CharField(max_length=20, default="active")
        suspended_reason = TextField(null=True)
        suspended_at = DateTimeField(null=True)
        email_verified_at = DateTimeField(null=True)
        password_changed_at = DateTimeField()
        last_login_at = DateTimeField(null=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class AuthSession(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        kind = CharField(max_length=20)  # browser | api
        token_hash = CharField(max_length=64, unique=True, null=True)  # browser cookie
        csrf_token = CharField(max_length=64, null=True)
        user_agent = CharField(max_length=300, default="")
        ip = CharField(max_length=64, default="")
        created_at = DateTimeField()
        last_used_at = DateTimeField()
        expires_at = DateTimeField()
        revoked_at = DateTimeField(null=True)
        revoked_reason = CharField(max_length=100, null=True)

    class RefreshToken(Base):
        session = ForeignKeyField(AuthSession, on_delete="CASCADE", index=True)
        token_hash = CharField(max_length=64, unique=True)
        created_at = DateTimeField()
        expires_at = DateTimeField()
        rotated_at = DateTimeField(null=True)

    class MfaFactor(Base):
        user = ForeignKeyField(User, on_delete="CASCADE", unique=True)
        secret = CharField(max_length=200)
        confirmed_at = DateTimeField(null=True)
        last_used_step = IntegerField(default=0)
        created_at = DateTimeField()

    class RecoveryCode(Base):
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        code_hash = CharField(max_length=64)
        used_at = DateTimeField(null=True)

    class EmailToken(Base):
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        purpose = CharField(max_length=20)  # verify | reset
        token_hash = CharField(max_length=64, unique=True)
        email = CharField(max_length=254)  # the address it was sent to / is to confirm
        created_at = DateTimeField()
        expires_at = DateTimeField()
        used_at = DateTimeField(null=True)

    class Invite(Base):
        id = CharField(primary_key=True, max_length=40)
        code_hash = CharField(max_length=64, unique=True)
        email = CharField(max_length=254, null=True)
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        created_at = DateTimeField()
        expires_at = DateTimeField()
        used_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
        used_at = DateTimeField(null=True)

    class MailOutbox(Base):
        id = CharField(primary_key=True, max_length=40)
        to_addr = CharField(max_length=254)
        subject = CharField(max_length=300)
        body = TextField()
        status = CharField(max_length=20, index=True)  # queued | sent | failed | held
        error = TextField(null=True)
        attempts = IntegerField(default=0)
        created_at = DateTimeField(index=True)
        sent_at = DateTimeField(null=True)

    class AuditLog(Base):
        id = CharField(primary_key=True, max_length=40)
        actor = ForeignKeyField(User, null=True, on_delete="SET NULL", index=True)
        action = CharField(max_length=60, index=True)
        target_type = CharField(max_length=40, null=True)
        target_id = CharField(max_length=40, null=True)
        ip = CharField(max_length=64, default="")
        details = TextField(default="{}")
        success = BooleanField(default=True)
        created_at = DateTimeField(index=True)

    db.create_tables([User, AuthSession, RefreshToken, MfaFactor, RecoveryCode, EmailToken,
                      Invite, MailOutbox, AuditLog])
