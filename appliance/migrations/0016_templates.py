"""Templates: a project's own images, each made from a backup of one of its instances.

A template is a row and a file: a copy (or hard link) of the backup's archive in the
backup store's `templates/` folder, with its size and sha256, so it outlives the backup
and the instance. Adds the `template` table and changes no row.
"""

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = CharField(primary_key=True, max_length=40)

    class Project(Base):
        id = CharField(primary_key=True, max_length=40)

    class Node(Base):
        id = CharField(primary_key=True, max_length=40)

    class Instance(Base):
        id = CharField(primary_key=True, max_length=40)

    class Backup(Base):
        id = CharField(primary_key=True, max_length=40)

    class Image(Base):
        id = CharField(primary_key=True, max_length=40)

    class Template(Base):
        id = CharField(primary_key=True, max_length=40)
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        name = CharField(max_length=64)
        status = CharField(max_length=20, index=True)
        source_instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL")
        source_instance_name = CharField(max_length=64)
        source_backup = ForeignKeyField(Backup, null=True, on_delete="SET NULL")
        node = ForeignKeyField(Node, on_delete="RESTRICT")
        archive = CharField(max_length=200, null=True)
        size_bytes = BigIntegerField(null=True)
        sha256 = CharField(max_length=64, null=True)
        size_gb = IntegerField()
        disk_gb = IntegerField(default=0)
        image = ForeignKeyField(Image, null=True, on_delete="SET NULL")
        error = CharField(max_length=500, null=True)
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        deleted_at = DateTimeField(null=True)

    db.create_tables([Template])
