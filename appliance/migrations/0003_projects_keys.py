"""Projects and members, API keys, SSH keys, quotas, idempotency records.

Every existing user is given a default project they own, as signup does from now on.
"""

import secrets

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
        created_at = DateTimeField()

    class Project(Base):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100)
        is_default = BooleanField(default=False)
        created_by = ForeignKeyField(User, on_delete="RESTRICT")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        deleted_at = DateTimeField(null=True)

    class Membership(Base):
        project = ForeignKeyField(Project, on_delete="CASCADE")
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        role = CharField(max_length=20)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("project", "user"), True),)

    class ApiKey(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        name = CharField(max_length=100)
        prefix = CharField(max_length=20)
        last_four = CharField(max_length=4)
        secret_hash = CharField(max_length=64, unique=True)
        previous_hash = CharField(max_length=64, null=True, unique=True)
        previous_valid_until = DateTimeField(null=True)
        scopes = TextField()
        project = ForeignKeyField(Project, null=True, on_delete="CASCADE", index=True)
        expires_at = DateTimeField(null=True)
        allowed_ips = TextField(null=True)
        rate_limit_rpm = IntegerField(null=True)
        last_used_at = DateTimeField(null=True)
        last_used_ip = CharField(max_length=64, null=True)
        usage_count = IntegerField(default=0)
        created_at = DateTimeField(index=True)
        rotated_at = DateTimeField(null=True)
        revoked_at = DateTimeField(null=True)

    class SshKey(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE")
        name = CharField(max_length=100)
        key_type = CharField(max_length=40)
        bits = IntegerField()
        public_key = TextField()
        fingerprint = CharField(max_length=60)
        created_at = DateTimeField(index=True)

        class Meta:
            indexes = ((("user", "fingerprint"), True),)

    class LimitOverride(Base):
        user = ForeignKeyField(User, on_delete="CASCADE")
        resource = CharField(max_length=40)
        value = IntegerField()
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("user", "resource"), True),)

    class LimitRequest(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        resource = CharField(max_length=40)
        current_limit = IntegerField()
        requested = IntegerField()
        reason = TextField(default="")
        status = CharField(max_length=20, default="pending", index=True)
        decided_by = ForeignKeyField(User, null=True, on_delete="SET NULL", backref="+")
        decided_at = DateTimeField(null=True)
        decision_note = TextField(default="")
        created_at = DateTimeField(index=True)

    class IdempotencyRecord(Base):
        owner = CharField(max_length=40)
        key = CharField(max_length=255)
        fingerprint = CharField(max_length=64)
        state = CharField(max_length=20)
        status = IntegerField(null=True)
        body = TextField(null=True)
        created_at = DateTimeField()
        expires_at = DateTimeField(index=True)

        class Meta:
            indexes = ((("owner", "key"), True),)

    db.create_tables([Project, Membership, ApiKey, SshKey, LimitOverride, LimitRequest,
                      IdempotencyRecord])

    for user in User.select(User.id, User.created_at):
        project_id = f"prj_{secrets.token_hex(10)}"
        Project.insert(id=project_id, name="Default project", is_default=True,
                       created_by=user.id, created_at=user.created_at,
                       updated_at=user.created_at).execute()
        Membership.insert(project=project_id, user=user.id, role="owner",
                          created_at=user.created_at, updated_at=user.created_at).execute()
