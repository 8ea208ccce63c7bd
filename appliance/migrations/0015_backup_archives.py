"""Backups become archive files in the appliance's store (BACKUP_DIR), of three kinds:
`manual` (asked for), `scheduled` (a backup tier's) and `final` (kept by a delete).

New columns on `backup`: `name`; `archive`, the file's name in the store; `size_bytes`
and `sha256` of that file; `disk_gb`, the instance's disk when taken (the least a plan
restoring it needs); `image_id`, the image the instance was made from (what an instance
created from the backup shows); `expires_at` (scheduled backups). Statuses gain
`restoring` and `deleting`.

Final backups taken before this migration stay engine archives (`engine_ref`), shown
and deleted as before; they are named "Final backup" and given the disk and image of
their instance. No row is removed.
"""

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    class Image(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "image"

    migrator.migrate(
        migrator.add_column("backup", "name", CharField(max_length=64, default="")),
        migrator.add_column("backup", "archive", CharField(max_length=200, null=True)),
        migrator.add_column("backup", "size_bytes", BigIntegerField(null=True)),
        migrator.add_column("backup", "sha256", CharField(max_length=64, null=True)),
        migrator.add_column("backup", "disk_gb", IntegerField(default=0)),
        migrator.add_column("backup", "image_id", ForeignKeyField(
            Image, field=Image.id, null=True, on_delete="SET NULL")),
        migrator.add_column("backup", "expires_at", DateTimeField(null=True)),
    )
    db.execute_sql('UPDATE "backup" SET "name" = \'Final backup\', "disk_gb" = "size_gb", '
                   '"image_id" = (SELECT "instance"."image_id" FROM "instance" '
                   'WHERE "instance"."id" = "backup"."instance_id")')
