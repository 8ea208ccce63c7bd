"""Backups of the appliance itself: `appliance backup`, `--verify`, `appliance restore`, and
the daily `self_backup` task with its status page, API and failure notice.

The load test drives the real thing: `appliance serve` in a subprocess taking writes over
HTTP while `appliance backup` runs in another, then `appliance restore` into a fresh
directory, whose database must hold every acknowledged write and balanced ledgers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests

from appliance import __version__, config, db, scheduler
from appliance.db import database
from appliance.models import Notification, SelfBackupRun
from appliance.services import clock
from appliance.services.ops import archive, restore, selfbackup
from tests.factories import PASSWORD, T0, bearer, make_user

ADMIN_PASSWORD = "a long admin passphrase"


def appliance(*args: str, env: dict[str, str] | None = None, timeout: int = 120):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "appliance", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def tree(top: Path) -> dict[str, str]:
    """Every file under `top` with the sha256 of its content (what "untouched" means)."""
    return {path.relative_to(top).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(top.rglob("*")) if path.is_file()}


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar if info.isfile()}


def rewrite(path: Path, content: dict[str, bytes]) -> None:
    """A tar.gz of `content`, in its order, replacing `path` (a forged archive)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, body in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))


def backup_of(app, output: Path, **kwargs) -> selfbackup.Result:
    with app.app_context(), database.connection_context():
        return selfbackup.create_backup(output, **kwargs)


@pytest.fixture
def target(make_app, tmp_path) -> Path:
    """A second, working data directory (an appliance with its own user) to restore over;
    no process holds it open afterwards."""
    path = tmp_path / "target"
    other = make_app(DATA_DIR=str(path))
    make_user(other, "kept@example.test")
    db.release(database.obj)
    return path


# Under load, with real processes -------------------------------------------------------


class Writer(threading.Thread):
    """Writes through the HTTP API at a steady rate until stopped: a signup, a credit grant
    to the new account, and every third round an API key; records each acknowledged write
    with the monotonic time its response arrived."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.stop = threading.Event()
        self.acked: list[tuple[str, str, float]] = []  # kind, id, when
        self.errors: list[str] = []

    def _post(self, path: str, body: dict, headers: dict[str, str] | None = None) -> dict:
        response = requests.post(self.url + "/api/v1" + path, json=body, headers=headers,
                                 timeout=30)
        if response.status_code != 201:
            self.errors.append(f"{path}: {response.status_code} {response.text[:200]}")
            return {}
        return response.json()

    def run(self) -> None:
        round_ = 0
        while not self.stop.is_set():
            round_ += 1
            email = f"load{round_}@example.test"
            user = self._post("/auth/signup", {"email": email, "password": PASSWORD})
            if user:
                self.acked.append(("user", email, time.monotonic()))
                credit = self._post("/admin/billing/credits", {
                    "user_id": user["user"]["id"], "amount": 100 + round_,
                    "note": f"load {round_}"}, self.headers)
                if credit:
                    self.acked.append(("ledger", str(credit["id"]), time.monotonic()))
            if round_ % 3 == 0:
                key = self._post("/api-keys", {"name": f"load {round_}",
                                               "scopes": ["instances:read"]}, self.headers)
                if key:
                    self.acked.append(("key", key["key"]["id"], time.monotonic()))
            time.sleep(0.02)


def test_a_backup_under_load_restores_every_acknowledged_write_with_balanced_ledgers(
        serve, tmp_path):
    data = tmp_path / "data"
    made = appliance("create-admin", "--email", "root@example.test", "--data-dir", str(data),
                     env={"APPLIANCE_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert made.returncode == 0, made.stderr
    server = serve(APPLIANCE_DATA_DIR=str(data), APPLIANCE_LOG_LEVEL="warning",
                   APPLIANCE_RATE_LIMIT_AUTH_PER_MINUTE="100000",
                   APPLIANCE_RATE_LIMIT_USER_PER_MINUTE="100000")
    tokens = requests.post(server.url + "/api/v1/auth/login", json={
        "email": "root@example.test", "password": ADMIN_PASSWORD}, timeout=10).json()
    writer = Writer(server.url, bearer(tokens))
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while len(writer.acked) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        began = time.monotonic()
        output = tmp_path / "appliance.tar.gz"
        made = appliance("backup", "--data-dir", str(data), "--output", str(output))
        ended = time.monotonic()
        time.sleep(0.3)
    finally:
        writer.stop.set()
        writer.join(30)
    assert made.returncode == 0, made.stderr
    assert writer.errors == []
    before = [(kind, ident) for kind, ident, when in writer.acked if when < began]
    during = [1 for _, _, when in writer.acked if began <= when <= ended]
    assert len(before) >= 12 and during, "the writes must go on while the backup runs"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600

    verified = appliance("backup", "--verify", str(output))
    assert verified.returncode == 0, verified.stderr
    fresh = tmp_path / "restored"
    restored = appliance("restore", str(output), "--data-dir", str(fresh))
    assert restored.returncode == 0, restored.stderr
    assert (fresh / "secrets" / "secret_key").read_bytes() == \
        (data / "secrets" / "secret_key").read_bytes()
    check_restored(fresh / "appliance.db", before)

    # The restored directory serves, with the same secret: the admin's token still works.
    again = serve(APPLIANCE_DATA_DIR=str(fresh), APPLIANCE_LOG_LEVEL="warning")
    me = requests.get(again.url + "/api/v1/auth/me", headers=bearer(tokens), timeout=10)
    assert me.status_code == 200 and me.json()["email"] == "root@example.test"


def check_restored(database_file: Path, before: list[tuple[str, str]]) -> None:
    """The database is intact, has every write in `before`, and every account's ledger
    re-derives: each entry's balance_after is the running sum of the amounts."""
    conn = sqlite3.connect(database_file)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        emails = {row[0] for row in conn.execute('SELECT email FROM "user"')}
        entries = {str(row[0]) for row in conn.execute("SELECT id FROM ledger_entry")}
        keys = {row[0] for row in conn.execute("SELECT id FROM api_key")}
        found = {"user": emails, "ledger": entries, "key": keys}
        missing = [(kind, ident) for kind, ident in before if ident not in found[kind]]
        assert missing == []
        accounts = conn.execute("SELECT DISTINCT user_id FROM ledger_entry").fetchall()
        assert len(accounts) >= 4
        for (user_id,) in accounts:
            rows = conn.execute("SELECT amount, balance_after FROM ledger_entry "
                                "WHERE user_id = ? ORDER BY id", (user_id,)).fetchall()
            running = 0
            for amount, balance_after in rows:
                running += amount
                assert balance_after == running, user_id
    finally:
        conn.close()


# What an archive holds ---------------------------------------------------------------------


def test_an_archive_holds_the_database_the_secrets_and_uploads_with_a_manifest(app, data_dir,
                                                                             tmp_path):
    make_user(app, "ada@example.test")
    (data_dir / "branding").mkdir()
    (data_dir / "branding" / "logo.png").write_bytes(b"\x89PNG not really")
    store = data_dir / "backups"
    store.mkdir()
    (store / "bak_one.tar").write_bytes(b"an instance backup")
    (store / "pre-migrate-0013-0014-20250101T000000Z.sqlite3").write_bytes(b"old db")
    output = tmp_path / "out.tar.gz"

    result = backup_of(app, output)

    content = members(output)
    assert sorted(content) == ["appliance.db", "data/branding/logo.png",
                               "data/secrets/secret_key", "manifest.json"]
    manifest = json.loads(content["manifest.json"])
    assert manifest["appliance_version"] == __version__
    assert manifest["schema"] == archive.known_migrations()[-1]
    assert manifest["migrations"] == archive.known_migrations()
    assert dt.datetime.fromisoformat(manifest["created_at"].replace("Z", "+00:00"))
    listed = {m["name"]: m for m in manifest["members"]}
    for name, body in content.items():
        if name != "manifest.json":
            assert listed[name] == {"name": name, "size": len(body),
                                    "sha256": hashlib.sha256(body).hexdigest()}
    assert result.sha256 == hashlib.sha256(output.read_bytes()).hexdigest()
    assert result.secret_key_included
    copy = tmp_path / "copy.db"
    copy.write_bytes(content["appliance.db"])
    conn = sqlite3.connect(copy)
    assert conn.execute('SELECT email FROM "user"').fetchall() == [("ada@example.test",)]
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()

    with_store = backup_of(app, tmp_path / "with.tar.gz", with_instance_backups=True)
    names = set(members(with_store.path))
    assert "instance-backups/bak_one.tar" in names
    assert not any("pre-migrate" in name or name.startswith("instance-backups/appliance/")
                   for name in names)


def test_the_default_archive_goes_to_the_backup_dir_private_and_named_by_version_and_time(
        app, data_dir):
    result = backup_of(app, None)
    folder = data_dir / "backups" / "appliance"
    assert result.path.parent == folder
    assert result.path.name.startswith(f"appliance-{__version__}-")
    assert result.path.name.endswith("Z.tar.gz")
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "backups").stat().st_mode) == 0o700
    assert [p.name for p in folder.iterdir()] == [result.path.name]  # no temporary left


def test_backup_refuses_a_data_directory_without_a_database(tmp_path):
    result = appliance("backup", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode != 0
    assert "no database" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "nothing").exists()


def test_a_damaged_database_is_not_archived(app, data_dir):
    make_user(app, "ada@example.test")
    db.release(database.obj)
    database_file = data_dir / "appliance.db"
    conn = sqlite3.connect(database_file)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'user'").fetchone()[0]
    conn.close()
    with database_file.open("r+b") as handle:  # scribble over the user table's b-tree page
        handle.seek((root - 1) * page_size + 8)
        handle.write(b"\xff" * 64)

    result = appliance("backup", "--data-dir", str(data_dir))

    assert result.returncode != 0, result.stdout
    # Where the scribble lands decides which the check reports; both refuse the copy.
    assert re.search(r"backup failed: the copy of the database (fails SQLite's integrity "
                     r"check|cannot be read: database disk image is malformed)", result.stderr)
    assert "Traceback" not in result.stderr
    assert list((data_dir / "backups" / "appliance").glob("*.tar.gz")) == []


# Verify and restore refuse what is wrong ----------------------------------------------


@pytest.fixture
def good_archive(app, tmp_path) -> Path:
    make_user(app, "ada@example.test")
    path = tmp_path / "good.tar.gz"
    backup_of(app, path)
    return path


def test_verify_accepts_a_good_archive(good_archive):
    result = appliance("backup", "--verify", str(good_archive))
    assert result.returncode == 0, result.stderr
    assert ": ok" in result.stdout and "note" not in result.stdout


def test_restore_refuses_an_archive_with_a_changed_database_byte(good_archive, target,
                                                                 tmp_path):
    content = members(good_archive)
    body = bytearray(content["appliance.db"])
    body[len(body) // 2] ^= 0x01
    content["appliance.db"] = bytes(body)
    forged = tmp_path / "forged.tar.gz"
    rewrite(forged, content)  # the old manifest, with the old checksum
    before = tree(target)

    verified = appliance("backup", "--verify", str(forged))
    restored = appliance("restore", str(forged), "--data-dir", str(target))

    for result in (verified, restored):
        assert result.returncode != 0
        assert "appliance.db does not match its checksum" in result.stderr
        assert "Traceback" not in result.stderr
    assert tree(target) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("target", ".target"))) \
        == ["target"]


def test_restore_refuses_a_damaged_gzip_stream(good_archive, target):
    raw = bytearray(good_archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    good_archive.write_bytes(bytes(raw))
    before = tree(target)
    for result in (appliance("backup", "--verify", str(good_archive)),
                   appliance("restore", str(good_archive), "--data-dir", str(target))):
        assert result.returncode != 0
        assert "damaged" in result.stderr and "Traceback" not in result.stderr
    assert tree(target) == before


def test_restore_refuses_an_archive_of_a_newer_schema(good_archive, target, tmp_path):
    # What a newer appliance would write: a database with a migration this code lacks,
    # and a manifest that says so, every checksum right.
    content = members(good_archive)
    manifest = json.loads(content.pop("manifest.json"))
    future = tmp_path / "future.db"
    future.write_bytes(content["appliance.db"])
    conn = sqlite3.connect(future)
    conn.execute("INSERT INTO schema_migration (name, applied) VALUES "
                 "('9999_from_the_future', '2030-01-01 00:00:00')")
    conn.commit()
    conn.close()
    content["appliance.db"] = future.read_bytes()
    manifest["migrations"].append("9999_from_the_future")
    manifest["schema"] = "9999_from_the_future"
    for member in manifest["members"]:
        if member["name"] == "appliance.db":
            member.update(size=len(content["appliance.db"]),
                          sha256=hashlib.sha256(content["appliance.db"]).hexdigest())
    content["manifest.json"] = json.dumps(manifest).encode()
    newer = tmp_path / "newer.tar.gz"
    rewrite(newer, content)
    before = tree(target)

    result = appliance("restore", str(newer), "--data-dir", str(target))

    assert result.returncode != 0
    assert "newer than this appliance knows" in result.stderr
    assert "9999_from_the_future" in result.stderr
    assert tree(target) == before
    verified = appliance("backup", "--verify", str(newer))
    assert verified.returncode == 0 and "cannot restore it" in verified.stdout


def test_restore_refuses_a_member_the_manifest_does_not_list(good_archive, target, tmp_path):
    content = members(good_archive)
    manifest = content.pop("manifest.json")
    content["data/secrets/extra"] = b"smuggled"
    content["manifest.json"] = manifest
    extra = tmp_path / "extra.tar.gz"
    rewrite(extra, content)
    before = tree(target)
    result = appliance("restore", str(extra), "--data-dir", str(target))
    assert result.returncode != 0 and "not in its manifest" in result.stderr
    assert tree(target) == before


def test_restore_refuses_while_a_server_runs_on_the_directory(good_archive, target, serve):
    server = serve(APPLIANCE_DATA_DIR=str(target), APPLIANCE_LOG_LEVEL="warning")
    before = {name: digest for name, digest in tree(target).items()
              if not name.startswith("appliance.db")}  # the server writes its database
    result = appliance("restore", str(good_archive), "--data-dir", str(target))
    assert result.returncode != 0
    assert f"pid {server.process.pid}" in result.stderr and "stop it" in result.stderr
    assert {name: digest for name, digest in tree(target).items()
            if not name.startswith("appliance.db")} == before
    assert requests.get(server.url + "/api/v1/health", timeout=5).status_code == 200


def test_restore_moves_the_old_directory_aside_and_carries_its_backups_over(good_archive,
                                                                          target, tmp_path):
    (target / "backups").mkdir()
    (target / "backups" / "bak_kept.tar").write_bytes(b"instance backup")
    old_key = (target / "secrets" / "secret_key").read_bytes()

    result = appliance("restore", str(good_archive), "--data-dir", str(target))

    assert result.returncode == 0, result.stderr
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("target.before-restore-")]
    assert len(aside) == 1 and str(aside[0]) in result.stdout
    assert (aside[0] / "secrets" / "secret_key").read_bytes() == old_key
    assert (aside[0] / "appliance.db").exists()
    assert (target / "backups" / "bak_kept.tar").read_bytes() == b"instance backup"
    assert (target / "secrets" / "secret_key").read_bytes() != old_key
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    conn = sqlite3.connect(target / "appliance.db")
    assert [r[0] for r in conn.execute('SELECT email FROM "user"')] == ["ada@example.test"]
    conn.close()


def test_instance_backups_in_a_store_outside_the_data_directory_round_trip(
        app, tmp_path, monkeypatch):
    # BACKUP_DIR (the instance backup store) may be a NAS mount outside the data directory.
    nas = tmp_path / "nas"
    (nas / "sub").mkdir(parents=True)
    (nas / "bak_a.tar").write_bytes(b"backup a")
    (nas / "sub" / "bak_b.tar").write_bytes(b"backup b")
    monkeypatch.setitem(config.active(), "BACKUP_DIR", str(nas))
    path = backup_of(app, tmp_path / "full.tar.gz", with_instance_backups=True).path
    assert {"instance-backups/bak_a.tar", "instance-backups/sub/bak_b.tar"} <= \
        set(members(path))
    (nas / "bak_a.tar").unlink()  # lost; bak_b is still there, the same
    settings = {**config.load_settings({"DATA_DIR": str(tmp_path / "new")}),
                "BACKUP_DIR": str(nas)}

    restore.restore(path, settings)

    assert (nas / "bak_a.tar").read_bytes() == b"backup a"
    assert (nas / "sub" / "bak_b.tar").read_bytes() == b"backup b"
    assert not (tmp_path / "new" / restore.STAGED_INSTANCE_BACKUPS).exists()
    assert (tmp_path / "new" / "appliance.db").exists()

    (nas / "sub" / "bak_b.tar").write_bytes(b"another b")
    before = tree(tmp_path / "new")
    with pytest.raises(archive.BackupError, match="exists and differs"):
        restore.restore(path, settings)
    assert tree(tmp_path / "new") == before
    assert (nas / "sub" / "bak_b.tar").read_bytes() == b"another b"


# The daily task --------------------------------------------------------------------------


def archives(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("appliance-*.tar.gz"))


def test_the_daily_backup_runs_once_a_day_and_keeps_the_newest(make_app, data_dir):
    app = make_app(SELF_BACKUP_KEEP="2")
    folder = data_dir / "backups" / "appliance"
    clock.freeze(T0)
    assert scheduler.run_task(app, "self_backup") == "ok"
    assert scheduler.run_task(app, "self_backup") is None  # done today
    clock.advance(dt.timedelta(hours=11))  # 23:30, still the same UTC day
    assert scheduler.run_task(app, "self_backup") is None
    assert len(archives(folder)) == 1
    for _ in range(3):
        clock.advance(dt.timedelta(days=1))
        assert scheduler.run_task(app, "self_backup") == "ok"
    kept = archives(folder)
    assert len(kept) == 2
    assert kept[-1].endswith("20250313T233000Z.tar.gz")
    assert kept[0].endswith("20250312T233000Z.tar.gz")
    (folder / "notes.txt").write_text("not ours")
    clock.advance(dt.timedelta(days=1))
    scheduler.run_task(app, "self_backup")
    assert (folder / "notes.txt").exists()
    with app.app_context():
        runs = list(SelfBackupRun.select().order_by(SelfBackupRun.id))
    assert [run.status for run in runs] == ["ok"] * 5
    assert {run.trigger for run in runs} == {"scheduled"}
    assert runs[-1].file.endswith(".tar.gz") and runs[-1].size_bytes > 0


def test_archives_of_one_second_keep_their_order_when_pruned(app, data_dir):
    clock.freeze(T0)
    made = [backup_of(app, None).path for _ in range(4)]
    folder = data_dir / "backups" / "appliance"
    assert sorted(selfbackup.prune(folder, 2)) == sorted(made[:2])
    assert archives(folder) == sorted(path.name for path in made[2:])
    assert backup_of(app, None).path.name.endswith("-4.tar.gz")  # never a freed name


def test_the_daily_backup_can_be_switched_off(make_app, data_dir):
    app = make_app(SELF_BACKUP_SCHEDULE="off")
    assert scheduler.run_task(app, "self_backup") is None
    assert not (data_dir / "backups" / "appliance").exists()


def test_a_failing_daily_backup_tells_each_administrator_once_a_day(make_app, tmp_path,
                                                                    monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the directory should be")
    app = make_app(SELF_BACKUP_DIR=str(blocker / "appliance"))
    root = make_user(app, "root@example.test", role="admin")
    other = make_user(app, "other-admin@example.test", role="admin")
    user = make_user(app, "user@example.test")
    clock.freeze(T0)

    def told(who) -> list[Notification]:
        with app.app_context():
            return list(Notification.select().where(Notification.user == who.id,
                                                    Notification.type == "appliance.backup_failed"))

    assert scheduler.run_task(app, "self_backup") == "failed"
    assert len(told(root)) == 1 and len(told(other)) == 1 and told(user) == []
    notice = told(root)[0]
    assert notice.email_status == "pending" and notice.link == "/admin/backups"
    assert "Not a directory" in notice.body
    with app.app_context():
        run = SelfBackupRun.select().order_by(SelfBackupRun.id.desc()).get()
    assert run.status == "failed" and "Not a directory" in run.error and run.file == ""

    assert scheduler.run_task(app, "self_backup") is None  # retried after an hour
    clock.advance(dt.timedelta(minutes=61))
    assert scheduler.run_task(app, "self_backup") == "failed"
    assert len(told(root)) == 1  # told once that day
    clock.advance(dt.timedelta(days=1))
    assert scheduler.run_task(app, "self_backup") == "failed"
    assert len(told(root)) == 2  # and again the next

    monkeypatch.setitem(config.active(), "SELF_BACKUP_DIR", str(tmp_path / "fixed"))
    clock.advance(dt.timedelta(hours=2))
    assert scheduler.run_task(app, "self_backup") == "ok"
    scheduler.run_task(app, "mail_notifications")
    with app.app_context():
        statuses = {n.email_status for n in Notification.select().where(
            Notification.type == "appliance.backup_failed")}
    assert statuses == {"skipped"}  # the news is no longer true when the mail would go


def test_administrators_see_the_last_run_in_the_api_and_the_dashboard(app, client, admin,
                                                                      owner, root):
    data_dir = Path(app.config["APPLIANCE"]["DATA_DIR"])
    empty = client.get("/api/v1/admin/self-backup", headers=admin).get_json()
    assert empty["last_run"] is None and empty["archives"] == []
    assert empty["schedule"] == "daily" and empty["keep"] == 7
    assert empty["directory"] == str(data_dir / "backups" / "appliance")
    result = backup_of(app, None)

    body = client.get("/api/v1/admin/self-backup", headers=admin).get_json()
    assert body["last_run"]["status"] == "ok" and body["last_run"]["trigger"] == "manual"
    assert body["last_success"]["file"] == str(result.path)
    assert body["last_success"]["sha256"] == result.sha256
    assert [a["file"] for a in body["archives"]] == [str(result.path)]
    assert client.get("/api/v1/admin/self-backup", headers=owner).status_code == 403

    page = root.get("/admin/backups")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Backups of the appliance" in html and result.path.name in html
