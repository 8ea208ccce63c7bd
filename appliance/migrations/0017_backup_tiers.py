"""Scheduled backup tiers: `instance.backup_tier` (`none`, `basic`, `extended`; every
instance starts at `none`), `backup.weekly` (a scheduled backup kept as the week's, by
the `extended` tier), and `backup_tier_period`, one row per stretch of time an instance
had a paid tier (what the metering tick charges by the hour). Adds columns with defaults
and a table; changes no row."""

from peewee import CharField, DateTimeField, ForeignKeyField, Model, SqliteDatabase


def up(migrator, db):
    class Instance(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "instance"

    class Project(Model):
        id = CharField(primary_key=True, max_length=40)

        class Meta:
            database = db
            table_name = "project"

    class BackupTierPeriod(Model):
        id = CharField(primary_key=True, max_length=40)
        instance = ForeignKeyField(Instance, on_delete="CASCADE")
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        tier = CharField(max_length=20)
        started_at = DateTimeField()
        ended_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "backup_tier_period"
            indexes = ((("instance", "ended_at"), False),)

    # Plain ALTER TABLE: SQLite adds a NOT NULL column with a default in place (peewee's
    # migrator would rebuild the table, which the triggers on `instance` forbid).
    db.execute_sql('ALTER TABLE "instance" ADD COLUMN "backup_tier" VARCHAR(20) NOT NULL '
                   "DEFAULT 'none'")
    # A boolean as each database keeps one (BooleanField: INTEGER on SQLite).
    weekly = ("INTEGER NOT NULL DEFAULT 0" if isinstance(db, SqliteDatabase)
              else "BOOLEAN NOT NULL DEFAULT FALSE")
    db.execute_sql(f'ALTER TABLE "backup" ADD COLUMN "weekly" {weekly}')
    db.create_tables([BackupTierPeriod])
