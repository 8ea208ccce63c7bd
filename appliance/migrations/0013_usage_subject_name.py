"""Usage records name what they metered: `usage_record.subject_name`, the instance's name
(for a backup, the name of the instance it was taken of) as it was when the hour was
recorded, so a later rename or delete does not change what a past record says.

Adds a column and changes no row: records made before it keep an empty name (they are
shown by their subject id). The ledger is untouched - its usage notes name the instance
from now on, in new rows only.
"""


def up(migrator, db):
    db.execute_sql('ALTER TABLE "usage_record" ADD COLUMN "subject_name" VARCHAR(64) '
                   "NOT NULL DEFAULT ''")
