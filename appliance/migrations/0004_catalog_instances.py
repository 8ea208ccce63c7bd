"""Plans, nodes, images, one-click apps, instances, jobs and instance events.

A partial unique index allows one unfinished job per instance (one operation at a time,
409 `operation_in_progress`), and one live instance per name in a project.
"""

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

    class Project(Base):
        id = CharField(primary_key=True, max_length=40)

    class Plan(Base):
        id = CharField(primary_key=True, max_length=40)
        slug = CharField(max_length=60, unique=True)
        name = CharField(max_length=100)
        vcpus = IntegerField()
        memory_mb = IntegerField()
        disk_gb = IntegerField()
        price_hourly = IntegerField()
        price_monthly_cap = IntegerField()
        active = BooleanField(default=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class Node(Base):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100, unique=True)
        engine = CharField(max_length=20)
        endpoint = CharField(max_length=500, default="")
        options = TextField(default="{}")
        capacity_vcpus = IntegerField()
        capacity_memory_mb = IntegerField()
        capacity_disk_gb = IntegerField()
        enabled = BooleanField(default=True)
        health = CharField(max_length=20, default="unknown")
        health_message = TextField(default="")
        engine_version = CharField(max_length=60, default="")
        simulated = BooleanField(default=False)
        unknown_instances = TextField(default="[]")
        last_checked_at = DateTimeField(null=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class Image(Base):
        id = CharField(primary_key=True, max_length=40)
        name = CharField(max_length=100)
        family = CharField(max_length=60, default="")
        version = CharField(max_length=60, default="")
        engine = CharField(max_length=20)
        ref = CharField(max_length=300)
        node = ForeignKeyField(Node, null=True, on_delete="CASCADE")
        min_disk_gb = IntegerField(default=1)
        default_user = CharField(max_length=60, default="root")
        description = TextField(default="")
        discovered = BooleanField(default=False)
        active = BooleanField(default=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

        class Meta:
            indexes = ((("engine", "ref", "node"), True),)

    class App(Base):
        id = CharField(primary_key=True, max_length=40)
        slug = CharField(max_length=60, unique=True)
        name = CharField(max_length=100)
        description = TextField(default="")
        image = ForeignKeyField(Image, on_delete="RESTRICT")
        env = TextField(default="{}")
        min_vcpus = IntegerField(default=1)
        min_memory_mb = IntegerField(default=128)
        min_disk_gb = IntegerField(default=1)
        active = BooleanField(default=True)
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class Instance(Base):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        name = CharField(max_length=64)
        plan = ForeignKeyField(Plan, on_delete="RESTRICT")
        image = ForeignKeyField(Image, on_delete="RESTRICT")
        node = ForeignKeyField(Node, on_delete="RESTRICT")
        driver_ref = CharField(max_length=200, null=True)
        status = CharField(max_length=20, index=True)
        power_state = CharField(max_length=20, default="unknown")
        ipv4 = CharField(max_length=45, null=True)
        ipv6 = CharField(max_length=45, null=True)
        password_sealed = TextField(null=True)
        ssh_keys = TextField(default="[]")
        suspended_at = DateTimeField(null=True)
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        deleted_at = DateTimeField(null=True)

    class Job(Base):
        id = CharField(primary_key=True, max_length=40)
        type = CharField(max_length=40)
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL")
        user = ForeignKeyField(User, null=True, on_delete="SET NULL")
        status = CharField(max_length=20, index=True)
        params = TextField(default="{}")
        step = IntegerField(default=0)
        total_steps = IntegerField(default=1)
        message = CharField(max_length=300, default="")
        error = TextField(null=True)
        error_code = CharField(max_length=60, null=True)
        attempts = IntegerField(default=0)
        lease_until = DateTimeField(null=True)
        run_after = DateTimeField(null=True)
        created_at = DateTimeField(index=True)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

    class InstanceEvent(Base):
        id = CharField(primary_key=True, max_length=40)
        instance = ForeignKeyField(Instance, on_delete="CASCADE")
        job = ForeignKeyField(Job, null=True, on_delete="SET NULL")
        type = CharField(max_length=60)
        message = TextField(default="")
        created_at = DateTimeField(index=True)

    db.create_tables([Plan, Node, Image, App, Instance, Job, InstanceEvent])
    db.execute_sql('CREATE UNIQUE INDEX "job_one_unfinished_per_instance" ON "job" '
                   "(\"instance_id\") WHERE \"status\" IN ('queued', 'running')")
    db.execute_sql('CREATE UNIQUE INDEX "instance_live_name_per_project" ON "instance" '
                   "(\"project_id\", \"name\") WHERE \"deleted_at\" IS NULL")
