"""Safe upgrades: the database is copied before an upgrade's migrations, each migration
runs in a transaction, a failing one stops the start-up with a message naming the copy,
and `appliance migrate --status` lists what is pending.

A data directory "of the previous version" is made by running the real migrations but
the last (a copy of the migrations directory without it); the current code then starts
on it, in a real `appliance serve` where the test can (a failing migration is injected
the same way, so that one runs in this process, through the CLI's own entry point).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from appliance import cli, create_app, db
from appliance.db import database
from tests.factories import api, make_user, signed_in


def number(name: str) -> int:
    return int(name.split("_", 1)[0])


MIGRATIONS = sorted((path.stem for path in db.MIGRATIONS_DIR.glob("[0-9]*.py")), key=number)
LATEST, PREVIOUS = MIGRATIONS[-1], MIGRATIONS[-2]
BOOM_NUMBER = number(LATEST) + 1
BOOM = f"{BOOM_NUMBER:04d}_boom"
BOOM_SOURCE = '''
def up(migrator, db):
    db.execute_sql('CREATE TABLE "boom_table" ("id" INTEGER PRIMARY KEY)')
    db.execute_sql('ALTER TABLE "user" ADD COLUMN "boom" INTEGER NOT NULL DEFAULT 0')
    db.execute_sql('UPDATE "user" SET "display_name" = \\'changed by boom\\'')
    raise RuntimeError("the boom migration fails on purpose")
'''


def appliance(*args: str, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=full_env,
                          capture_output=True, text=True, timeout=120)


def migrations_dir(tmp_path: Path, names: list[str], extra: dict[str, str] | None = None):
    folder = tmp_path / f"migrations-{len(names)}-{'-'.join(extra or ())}"
    folder.mkdir()
    for name in names:
        shutil.copy(db.MIGRATIONS_DIR / f"{name}.py", folder / f"{name}.py")
    for name, source in (extra or {}).items():
        (folder / f"{name}.py").write_text(source)
    return folder


def pre_migrate_copies(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "backups").glob("pre-migrate-*.sqlite3"))


def applied_in(path: Path) -> list[str]:
    """The migrations a SQLite file records, in order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted((row[0] for row in conn.execute("SELECT name FROM schema_migration")),
                      key=number)
    finally:
        conn.close()


def columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
    finally:
        conn.close()


@pytest.fixture
def previous_version(tmp_path, monkeypatch) -> Path:
    """A data directory at the schema before the latest migration, with an administrator
    and an account that was granted credit (through the API)."""
    data_dir = tmp_path / "old"
    monkeypatch.setattr(db, "MIGRATIONS_DIR", migrations_dir(tmp_path, MIGRATIONS[:-1]))
    app = create_app({"DATA_DIR": str(data_dir)})
    make_user(app, "root@example.test", role="admin")
    ada = make_user(app, "ada@example.test", display_name="Ada")
    client = app.test_client()
    granted = api(client, "POST", "/admin/billing/credits",
                  signed_in(client, "root@example.test"),
                  json={"user_id": ada.id, "amount": 1234, "note": "before the upgrade"})
    assert granted.status_code == 201, granted.get_json()
    db.release(database.obj)
    monkeypatch.undo()
    assert applied_in(data_dir / "appliance.db") == MIGRATIONS[:-1]
    return data_dir


def test_the_new_version_copies_the_database_before_migrating_and_keeps_the_data(
        previous_version, serve):
    server = serve(APPLIANCE_DATA_DIR=str(previous_version))

    copies = pre_migrate_copies(previous_version)
    assert [p.name[:len("pre-migrate-0000-0000-")] for p in copies] == [
        f"pre-migrate-{PREVIOUS[:4]}-{LATEST[:4]}-"]
    assert stat.S_IMODE(copies[0].stat().st_mode) == 0o600
    assert applied_in(copies[0]) == MIGRATIONS[:-1]  # the copy is of the old schema
    conn = sqlite3.connect(copies[0])
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert ("ada@example.test",) in conn.execute('SELECT email FROM "user"').fetchall()
    conn.close()

    assert applied_in(previous_version / "appliance.db") == MIGRATIONS
    tokens = requests.post(server.url + "/api/v1/auth/login", json={
        "email": "ada@example.test", "password": "correct horse battery staple"},
        timeout=10).json()
    billing = requests.get(server.url + "/api/v1/billing", timeout=10,
                           headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert billing.status_code == 200 and billing.json()["balance"] == 1234
    output = server.stop()
    assert "copied to" in output and copies[0].name in output

    # Starting again migrates nothing and copies nothing.
    again = serve(APPLIANCE_DATA_DIR=str(previous_version))
    again.stop()
    assert pre_migrate_copies(previous_version) == copies


def test_a_new_database_is_not_copied(make_app, data_dir):
    make_app()
    assert pre_migrate_copies(data_dir) == []


def test_migrate_status_lists_the_pending_migrations(previous_version):
    status = appliance("migrate", "--status", "--data-dir", str(previous_version))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert f"pending  {LATEST}" in lines
    assert f"applied  {PREVIOUS}" in lines and f"applied  {MIGRATIONS[0]}" in lines
    assert lines[-1] == "1 pending"
    assert applied_in(previous_version / "appliance.db") == MIGRATIONS[:-1]  # only listed

    migrated = appliance("migrate", "--data-dir", str(previous_version))
    assert migrated.returncode == 0, migrated.stderr
    assert f"applied {LATEST}" in migrated.stdout
    assert len(pre_migrate_copies(previous_version)) == 1
    after = appliance("migrate", "--status", "--data-dir", str(previous_version))
    assert f"applied  {LATEST}" in after.stdout.splitlines()
    assert after.stdout.splitlines()[-1] == "database is up to date"


def test_a_failing_migration_is_rolled_back_and_the_error_names_the_copy(
        make_app, data_dir, tmp_path, monkeypatch):
    app = make_app()
    make_user(app, "ada@example.test", display_name="Ada")
    db.release(database.obj)
    database_file = data_dir / "appliance.db"
    before_columns = columns(database_file, "user")
    monkeypatch.setattr(db, "MIGRATIONS_DIR",
                        migrations_dir(tmp_path, MIGRATIONS, {BOOM: BOOM_SOURCE}))

    with pytest.raises(db.MigrationFailed) as failed:
        create_app({"DATA_DIR": str(data_dir)})

    message = str(failed.value)
    copy = failed.value.backup
    assert copy is not None and copy.exists() and str(copy) in message
    assert f"migration {BOOM} failed" in message and "on purpose" in message
    assert f"the database is at {LATEST}" in message
    db.release(database.obj)
    assert applied_in(database_file) == MIGRATIONS  # the old schema, as it was
    assert columns(database_file, "user") == before_columns
    conn = sqlite3.connect(database_file)
    try:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'boom_table'"
                            ).fetchall() == []
        assert conn.execute('SELECT display_name FROM "user"').fetchall() == [("Ada",)]
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    assert applied_in(copy) == MIGRATIONS


def test_serve_refuses_to_start_with_a_clear_message_when_a_migration_fails(
        make_app, data_dir, tmp_path, monkeypatch):
    make_app()
    db.release(database.obj)
    monkeypatch.setattr(db, "MIGRATIONS_DIR",
                        migrations_dir(tmp_path, MIGRATIONS, {BOOM: BOOM_SOURCE}))

    result = CliRunner().invoke(cli.main, ["serve", "--data-dir", str(data_dir),
                                           "--port", "0"])

    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    output = result.output
    assert f"Error: migration {BOOM} failed" in output
    named = re.search(r"a copy from before this upgrade is at (\S+?\.sqlite3)", output)
    assert named and Path(named.group(1)).exists()
    assert "Restore after a failed upgrade" in output
    assert "Traceback" not in output


def test_when_the_second_of_two_pending_migrations_fails_the_first_stays(
        previous_version, tmp_path, monkeypatch):
    monkeypatch.setattr(db, "MIGRATIONS_DIR",
                        migrations_dir(tmp_path, MIGRATIONS, {BOOM: BOOM_SOURCE}))
    with pytest.raises(db.MigrationFailed) as failed:
        create_app({"DATA_DIR": str(previous_version)})
    db.release(database.obj)
    assert f"the database is at {LATEST}" in str(failed.value)
    assert applied_in(previous_version / "appliance.db") == MIGRATIONS
    assert applied_in(failed.value.backup) == MIGRATIONS[:-1]  # from before either ran


def test_only_the_three_newest_copies_are_kept(make_app, data_dir):
    app = make_app()
    folder = data_dir / "backups"
    folder.mkdir()
    (folder / "bak_other.tar").write_bytes(b"not a copy")
    with app.app_context():
        made = [db.pre_migrate_backup(database.obj, folder, PREVIOUS, LATEST)
                for _ in range(5)]
    assert pre_migrate_copies(data_dir) == sorted(made[-3:])
    assert (folder / "bak_other.tar").exists()
