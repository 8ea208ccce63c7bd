"""Backups kept by the appliance: for now the final backup a delete may keep (an engine
archive that outlives the instance). Listed per project, deleted by its members."""

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model


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
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        instance = ForeignKeyField(Instance, null=True, on_delete="SET NULL")
        instance_name = CharField(max_length=64)
        node = ForeignKeyField(Node, on_delete="RESTRICT")
        kind = CharField(max_length=20)
        status = CharField(max_length=20, index=True)
        engine_ref = CharField(max_length=300, null=True)
        size_gb = IntegerField()
        error = CharField(max_length=500, null=True)
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        deleted_at = DateTimeField(null=True)

    db.create_tables([Backup])
