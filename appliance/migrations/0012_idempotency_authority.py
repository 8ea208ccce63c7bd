"""Idempotency records remember the credential and standing they answered.

A stored answer is replayed only to the credential that got it (an API key, or the
account's own tokens) while its roles are unchanged. Existing records get "", read as
"the account's own tokens": no API key can replay them.
"""

from peewee import CharField


def up(migrator, db):
    migrator.migrate(
        migrator.add_column("idempotency_record", "authority",
                            CharField(max_length=120, default="")))
