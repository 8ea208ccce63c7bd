"""What a project's instance list needs to be served fast.

- An index in the list's own order over live instances, so a page is read without a sort.
- `listing_version`: a number per project that SQLite triggers raise on every change to
  the project's instances or jobs, and to the plan, image or node fields a list shows.
  A rendered page is cached under the number it was read at (services/instances/lifecycle.py),
  so a change made by any connection or process - a job's progress, the reconciler, the
  CLI - is seen by the next request. Other databases get no triggers and no cache.
"""

from peewee import SqliteDatabase

BUMP = ('INSERT INTO "listing_version" ("project_id", "version") VALUES ({project}, 1) '
        'ON CONFLICT ("project_id") DO UPDATE SET "version" = "version" + 1;')
BUMP_SHOWN = ('UPDATE "listing_version" SET "version" = "version" + 1 WHERE "project_id" '
              'IN (SELECT "project_id" FROM "instance" WHERE "{ref}" = NEW."id");')

# (trigger name, event, table, WHEN condition, project id expression)
TRIGGERS = (
    ("instance_insert", "INSERT", "instance", "1", "NEW.project_id"),
    ("instance_update", "UPDATE", "instance", "1", "NEW.project_id"),
    ("instance_delete", "DELETE", "instance", "1", "OLD.project_id"),
    ("job_insert", "INSERT", "job", "NEW.instance_id IS NOT NULL", "NEW.project_id"),
    ("job_update", "UPDATE", "job", "NEW.instance_id IS NOT NULL", "NEW.project_id"),
)

# Catalog rows shown inside each listed instance: (table, columns shown, instance column)
SHOWN = (
    ("plan", ("slug", "name", "vcpus", "memory_mb", "disk_gb"), "plan_id"),
    ("image", ("name", "default_user"), "image_id"),
    ("node", ("name", "engine", "simulated"), "node_id"),
)


def up(migrator, db):
    db.execute_sql('CREATE INDEX "instance_live_listing" ON "instance" '
                   '("project_id", "created_at" DESC, "id" DESC) WHERE "deleted_at" IS NULL')
    if not isinstance(db, SqliteDatabase):
        return
    db.execute_sql('CREATE TABLE "listing_version" ("project_id" VARCHAR(40) NOT NULL '
                   'PRIMARY KEY REFERENCES "project" ("id") ON DELETE CASCADE, '
                   '"version" INTEGER NOT NULL)')
    db.execute_sql('INSERT INTO "listing_version" ("project_id", "version") '
                   'SELECT DISTINCT "project_id", 1 FROM "instance"')
    for name, event, table, when, project in TRIGGERS:
        db.execute_sql(f'CREATE TRIGGER "listing_{name}" AFTER {event} ON "{table}" '
                       f'WHEN {when} BEGIN {BUMP.format(project=project)} END')
    for table, columns, ref in SHOWN:
        changed = " OR ".join(f'OLD."{c}" IS NOT NEW."{c}"' for c in columns)
        db.execute_sql(f'CREATE TRIGGER "listing_{table}_update" AFTER UPDATE ON "{table}" '
                       f'WHEN {changed} BEGIN {BUMP_SHOWN.format(ref=ref)} END')
