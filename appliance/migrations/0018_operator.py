"""The operator's console, second part: bans with an end, node overcommit and what the
engine reports, and the email-verification gate.

- `suspension_end` (a new table: user, until): when an administrator's suspension lifts
  by itself; a user without a row stays suspended until lifted by hand. Not a column of
  `user`, which every request reads.
- `node.vcpu_ratio_pct`, `memory_ratio_pct`, `disk_ratio_pct`: the overcommit ratios in
  hundredths (400 = 4x vCPU, 100 = 1x memory and disk); placement allots capacity times
  ratio. `node.engine_vcpus`, `engine_memory_mb`, `engine_disk_gb`: the engine's own
  figures from the last health check (null when it reports none).
- REQUIRE_VERIFIED_EMAIL is on for new installs; an install that already has accounts
  keeps provisioning open to unverified ones (a stored `false` the operator can change
  on the Settings page), so an upgrade locks nobody out.
No row is removed.
"""

import datetime as dt

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model


def up(migrator, db):
    class User(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "user"

    class SuspensionEnd(Model):
        user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
        until = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "suspension_end"

    db.create_tables([SuspensionEnd])
    migrator.migrate(
        migrator.add_column("node", "vcpu_ratio_pct", IntegerField(default=400)),
        migrator.add_column("node", "memory_ratio_pct", IntegerField(default=100)),
        migrator.add_column("node", "disk_ratio_pct", IntegerField(default=100)),
        migrator.add_column("node", "engine_vcpus", IntegerField(null=True)),
        migrator.add_column("node", "engine_memory_mb", IntegerField(null=True)),
        migrator.add_column("node", "engine_disk_gb", IntegerField(null=True)),
    )
    if db.execute_sql('SELECT 1 FROM "user" LIMIT 1').fetchone() is not None:
        sql = ('INSERT INTO "setting" ("key", "value", "updated_at") VALUES (?, ?, ?) '
               'ON CONFLICT ("key") DO NOTHING')
        db.execute_sql(sql.replace("?", db.param),
                       ("REQUIRE_VERIFIED_EMAIL", "false",
                        dt.datetime.now(dt.UTC).replace(tzinfo=None)))
