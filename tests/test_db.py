import threading

from appliance import db
from appliance.db import database


def table_names(app):
    with app.app_context():
        return set(database.get_tables())


def test_start_up_applies_the_migrations_and_records_them(app):
    with app.app_context():
        applied = dict(db.migration_status(database.obj))
    assert applied and all(applied.values())
    assert "0001_initial" in applied
    assert {"schema_migration", "setting"} <= table_names(app)


def test_migrating_again_applies_nothing_and_keeps_data(app, make_app):
    from appliance.services import settings

    with app.app_context():
        settings.put("SITE_NAME", "Kept")
    again = make_app()
    assert db.migrate(database.obj) == []
    assert again.test_client().get("/api/v1/config").get_json()["site_name"] == "Kept"


def test_sqlite_runs_in_wal_with_foreign_keys_busy_timeout_and_full_sync(app):
    with app.app_context():
        pragma = lambda name: database.execute_sql(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 5000
        assert pragma("synchronous") == 2  # FULL


def test_write_transactions_begin_immediate(app):
    """A transaction holds the write lock from BEGIN: a second writer waits for it."""
    order = []
    first_has_lock = threading.Event()
    release_first = threading.Event()

    def first():
        with database.connection_context(), database.atomic():
            first_has_lock.set()  # no statement ran yet: only BEGIN IMMEDIATE holds the lock
            release_first.wait(5)
            order.append("first")

    def second():
        first_has_lock.wait(5)
        with database.connection_context(), database.atomic():
            order.append("second")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_has_lock.wait(5)
    threading.Event().wait(0.2)  # give the second writer time to try, and block
    assert order == []
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second"]


def test_tables_are_created_only_by_migrations():
    from tests.conftest import ROOT

    offenders = [path for path in (ROOT / "appliance").rglob("*.py")
                 if "create_tables" in path.read_text() and "migrations" not in path.parts]
    assert offenders == []


def test_a_database_url_is_accepted(make_app, tmp_path):
    target = tmp_path / "elsewhere.db"
    app = make_app(DATABASE_URL=f"sqlite:///{target}")
    assert app.test_client().get("/api/v1/health/db").status_code == 200
    assert target.exists()


def test_every_model_matches_the_table_its_migrations_made(app):
    from appliance import models

    with app.app_context():
        for name in models.__all__:
            model = getattr(models, name)
            table = model._meta.table_name
            columns = {column.name for column in database.get_columns(table)}
            assert columns == set(model._meta.columns), f"{name} differs from table {table}"
