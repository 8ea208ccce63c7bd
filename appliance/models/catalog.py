"""What instances are made from and where they run: plans, images, apps, nodes."""

from peewee import BooleanField, CharField, ForeignKeyField, IntegerField, TextField

from appliance.db import BaseModel, UTCDateTimeField


class Plan(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # pln_...
    slug = CharField(max_length=60, unique=True)
    name = CharField(max_length=100)
    vcpus = IntegerField()
    memory_mb = IntegerField()
    disk_gb = IntegerField()
    price_hourly = IntegerField()  # minor units
    price_monthly_cap = IntegerField()  # minor units per calendar month
    active = BooleanField(default=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()


class Node(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # node_...
    name = CharField(max_length=100, unique=True)
    engine = CharField(max_length=20)  # incus | docker | fake
    endpoint = CharField(max_length=500, default="")  # "" = the engine's local socket
    options = TextField(default="{}")  # JSON: TLS certificate paths and the like
    capacity_vcpus = IntegerField()
    capacity_memory_mb = IntegerField()
    capacity_disk_gb = IntegerField()
    # Overcommit in hundredths: placement allots capacity x ratio (400 = 4x).
    vcpu_ratio_pct = IntegerField(default=400)
    memory_ratio_pct = IntegerField(default=100)
    disk_ratio_pct = IntegerField(default=100)
    # The engine's own figures at the last health check (None: it reports none).
    engine_vcpus = IntegerField(null=True)
    engine_memory_mb = IntegerField(null=True)
    engine_disk_gb = IntegerField(null=True)
    enabled = BooleanField(default=True)
    health = CharField(max_length=20, default="unknown")  # unknown | healthy | unhealthy
    health_message = TextField(default="")
    engine_version = CharField(max_length=60, default="")
    simulated = BooleanField(default=False)
    # Instances on the engine named like ours that no row knows (JSON list of refs).
    unknown_instances = TextField(default="[]")
    last_checked_at = UTCDateTimeField(null=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()


class Image(BaseModel):
    id = CharField(primary_key=True, max_length=40)  # img_...
    name = CharField(max_length=100)
    family = CharField(max_length=60, default="")  # debian, alpine, busybox ...
    version = CharField(max_length=60, default="")
    engine = CharField(max_length=20)  # which engine's image this is
    ref = CharField(max_length=300)  # the engine's reference: an Incus alias, a Docker tag
    node = ForeignKeyField(Node, null=True, on_delete="CASCADE", backref="images")
    min_disk_gb = IntegerField(default=1)
    default_user = CharField(max_length=60, default="root")
    description = TextField(default="")
    discovered = BooleanField(default=False)  # found on a node rather than registered
    active = BooleanField(default=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()

    class Meta:
        indexes = ((("engine", "ref", "node"), True),)


class App(BaseModel):
    """A one-click app: an image plus default environment and minimum requirements."""

    id = CharField(primary_key=True, max_length=40)  # app_...
    slug = CharField(max_length=60, unique=True)
    name = CharField(max_length=100)
    description = TextField(default="")
    image = ForeignKeyField(Image, on_delete="RESTRICT", backref="apps")
    env = TextField(default="{}")  # JSON object of default environment variables
    min_vcpus = IntegerField(default=1)
    min_memory_mb = IntegerField(default=128)
    min_disk_gb = IntegerField(default=1)
    active = BooleanField(default=True)
    created_at = UTCDateTimeField(index=True)
    updated_at = UTCDateTimeField()
