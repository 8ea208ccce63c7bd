"""Invoices: monthly statements with gap-free numbers per year, their lines, the runs
that made them, and Stripe Checkout top-ups.

Issued invoices and their lines are immutable: triggers abort any UPDATE or DELETE of
their rows. The number counter is a row per year, raised in the same transaction as the
invoice it numbers, so a crash rolls back both and no number is skipped.
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

    class InvoiceCounter(Base):
        year = IntegerField(primary_key=True)
        last_number = IntegerField()

    class InvoiceRun(Base):
        period_start = DateTimeField(primary_key=True)
        invoices = IntegerField()
        finished_at = DateTimeField()

    class Invoice(Base):
        id = CharField(primary_key=True, max_length=40)
        user = ForeignKeyField(User, on_delete="RESTRICT", index=True)
        number = CharField(max_length=20, unique=True)
        year = IntegerField()
        sequence = IntegerField()
        period_start = DateTimeField()
        period_end = DateTimeField()
        status = CharField(max_length=20, default="issued")
        currency = CharField(max_length=3)
        subtotal = IntegerField()
        vat_rate_bp = IntegerField()
        vat_amount = IntegerField()
        total = IntegerField()
        credits_applied = IntegerField()
        amount_due = IntegerField()
        seller_name = CharField(max_length=200)
        seller_address = TextField(default="")
        buyer_name = CharField(max_length=200, default="")
        buyer_email = CharField(max_length=320, default="")
        buyer_address = TextField(default="")
        buyer_vat_id = CharField(max_length=40, default="")
        issued_at = DateTimeField()
        created_at = DateTimeField(index=True)

        class Meta:
            indexes = ((("user", "period_start"), True),
                       (("year", "sequence"), True))

    class InvoiceLine(Base):
        id = AutoField()
        invoice = ForeignKeyField(Invoice, on_delete="RESTRICT", index=True)
        position = IntegerField()
        resource = CharField(max_length=40)
        sku = CharField(max_length=60)
        description = CharField(max_length=300)
        hours = IntegerField()
        unit_price = IntegerField()
        amount = IntegerField()
        cap_applied = BooleanField(default=False)

    class StripeTopup(Base):
        session_id = CharField(primary_key=True, max_length=255)
        user = ForeignKeyField(User, on_delete="RESTRICT", index=True)
        amount = IntegerField()
        currency = CharField(max_length=3)
        event_id = CharField(max_length=255, null=True)
        ledger_reference = CharField(max_length=200, null=True)
        created_at = DateTimeField()
        credited_at = DateTimeField(null=True)

    db.create_tables([InvoiceCounter, InvoiceRun, Invoice, InvoiceLine, StripeTopup])
    for table in ("invoice", "invoice_line"):
        refuse_changes(db, table, "issued invoices are immutable")


def refuse_changes(db, table, message):
    """As in 0007: triggers aborting every UPDATE and DELETE of `table`'s rows."""
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
