"""Usage and billing: the credit ledger, usage records and their daily rollup, the
metering cursor, billing accounts, low-balance alerts, promo codes and redemptions.

The ledger is append-only: triggers abort any UPDATE or DELETE of its rows, so a
correction can only be a new entry and every balance stays re-derivable from the rows.
"""

from peewee import (
    AutoField,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    Model,
    SqliteDatabase,
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

    class LedgerEntry(Base):
        id = AutoField()
        user = ForeignKeyField(User, on_delete="RESTRICT", index=True)
        type = CharField(max_length=20)
        amount = IntegerField()
        balance_after = IntegerField()
        reference = CharField(max_length=200, unique=True)
        note = TextField(default="")
        created_by = ForeignKeyField(User, null=True, on_delete="RESTRICT")
        project = ForeignKeyField(Project, null=True, on_delete="RESTRICT")
        created_at = DateTimeField(index=True)

    class UsageRecord(Base):
        id = AutoField()
        user = ForeignKeyField(User, on_delete="RESTRICT")
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        subject_id = CharField(max_length=40)
        resource = CharField(max_length=40)
        sku = CharField(max_length=60)
        hour = DateTimeField()
        quantity = IntegerField()
        unit_price = IntegerField()
        amount = IntegerField()
        created_at = DateTimeField()

        class Meta:
            indexes = ((("subject_id", "resource", "hour"), True),
                       (("user", "hour"), False),
                       (("project", "hour"), False))

    class UsageDaily(Base):
        id = AutoField()
        user = ForeignKeyField(User, on_delete="RESTRICT")
        project = ForeignKeyField(Project, on_delete="RESTRICT")
        day = CharField(max_length=10)
        resource = CharField(max_length=40)
        sku = CharField(max_length=60)
        quantity = IntegerField(default=0)
        amount = IntegerField(default=0)

        class Meta:
            indexes = ((("user", "day", "project", "resource", "sku"), True),)

    class UsageMeter(Base):
        subject_id = CharField(max_length=40)
        resource = CharField(max_length=40)
        last_hour = DateTimeField()
        sku = CharField(max_length=60)
        month = CharField(max_length=7)
        month_amount = IntegerField(default=0)
        closed = BooleanField(default=False)

        class Meta:
            primary_key = False
            indexes = ((("subject_id", "resource"), True),)

    class BillingAccount(Base):
        user = ForeignKeyField(User, primary_key=True, on_delete="CASCADE")
        spend_cap = IntegerField(null=True)
        invoice_name = CharField(max_length=200, default="")
        invoice_address = TextField(default="")
        vat_id = CharField(max_length=40, default="")
        grace_started_at = DateTimeField(null=True)
        suspended_at = DateTimeField(null=True)
        suspended_reason = CharField(max_length=40, null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()

    class BillingAlert(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="CASCADE")
        threshold = IntegerField()
        armed = BooleanField(default=True)
        fired_at = DateTimeField(null=True)
        created_at = DateTimeField(index=True)

        class Meta:
            indexes = ((("user", "threshold"), True),)

    class PromoCode(Base):
        id = CharField(primary_key=True, max_length=40)
        code = CharField(max_length=60, unique=True)
        amount = IntegerField()
        max_uses = IntegerField(null=True)
        uses = IntegerField(default=0)
        once_per_user = BooleanField(default=True)
        expires_at = DateTimeField(null=True)
        active = BooleanField(default=True)
        note = TextField(default="")
        created_by = ForeignKeyField(User, null=True, on_delete="SET NULL")
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()

    class PromoRedemption(Base):
        id = CharField(primary_key=True, max_length=40)
        promo = ForeignKeyField(PromoCode, on_delete="RESTRICT")
        user = ForeignKeyField(User, on_delete="CASCADE", index=True)
        number = IntegerField(default=1)
        ledger_reference = CharField(max_length=200)
        created_at = DateTimeField(index=True)

        class Meta:
            indexes = ((("promo", "user", "number"), True),)

    db.create_tables([LedgerEntry, UsageRecord, UsageDaily, UsageMeter, BillingAccount,
                      BillingAlert, PromoCode, PromoRedemption])
    refuse_changes(db, "ledger_entry", "ledger entries are append-only")


def refuse_changes(db, table, message):
    """Triggers that abort every UPDATE and DELETE of `table`'s rows with `message`
    (SQLite's RAISE(ABORT); on PostgreSQL a PL/pgSQL function raising a
    restrict_violation, which drivers report as an integrity error like SQLite's)."""
    if isinstance(db, SqliteDatabase):
        for action in ("UPDATE", "DELETE"):
            db.execute_sql(
                f'CREATE TRIGGER "{table}_no_{action.lower()}" BEFORE {action} '
                f'ON "{table}" BEGIN '
                f"SELECT RAISE(ABORT, '{message}'); END")
        return
    db.execute_sql(
        'CREATE OR REPLACE FUNCTION "appliance_refuse_change"() RETURNS trigger '
        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION USING MESSAGE = TG_ARGV[0], "
        "ERRCODE = 'restrict_violation'; END $$")
    for action in ("UPDATE", "DELETE"):
        db.execute_sql(
            f'CREATE TRIGGER "{table}_no_{action.lower()}" BEFORE {action} '
            f'ON "{table}" FOR EACH ROW EXECUTE FUNCTION '
            f'"appliance_refuse_change"(\'{message}\')')
