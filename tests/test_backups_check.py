"""The start-up check of backups (services/instances/backup_check.py) on the simulated
engine: files no backup knows are removed, backups whose archive is gone are failed
(unless the whole store looks unmounted), interrupted deletes are finished and backups
left in progress by no job are settled. `appliance check-backups` runs the same check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance import cli
from appliance.models import Backup, Job
from appliance.services.instances import backup_check
from tests.factories import api, create_instance, run_jobs


@pytest.fixture
def project(owner_project):
    return owner_project


def store(app) -> Path:
    return Path(app.config["APPLIANCE"]["BACKUP_DIR"])


def take(app, client, owner, project, instance_id, *, run=True) -> str:
    response = api(client, "POST", f"/projects/{project}/instances/{instance_id}/backups",
                   owner, json={})
    assert response.status_code == 202
    if run:
        run_jobs(app)
    return response.get_json()["backup"]["id"]


def check(app, repair=True) -> backup_check.Report:
    with app.app_context():
        return backup_check.check(repair=repair)


def status_of(app, backup_id: str) -> str:
    with app.app_context():
        return Backup.get_by_id(backup_id).status


def test_a_consistent_store_is_clean(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    take(app, client, owner, project, instance["id"])
    assert check(app).clean


def test_files_no_backup_knows_are_removed_and_kept_ones_stay(app, client, owner, project,
                                                              catalog):
    instance = create_instance(app, client, owner, project, catalog)
    kept = take(app, client, owner, project, instance["id"])
    stranger = store(app) / "bak_0123456789abcdef0123.fake.archive"
    stranger.write_bytes(b"no row knows me")
    killed = store(app) / "bak_00000000000000000000.incus.archive.part"
    killed.write_bytes(b"half of what a killed job wrote")
    unrelated = store(app) / "README.txt"  # not an archive name: never touched
    unrelated.write_text("the operator's note")
    looked = check(app, repair=False)
    assert sorted(looked.orphan_files) == sorted([stranger.name, killed.name])
    assert stranger.exists() and killed.exists()  # a dry run changes nothing
    report = check(app)
    assert sorted(report.orphan_files) == sorted([stranger.name, killed.name])
    assert sorted(p.name for p in store(app).iterdir()) == sorted(
        [f"{kept}.fake.archive", "README.txt"])
    assert check(app).clean


def test_a_backup_being_taken_keeps_its_part_for_its_job(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup_id = take(app, client, owner, project, instance["id"], run=False)
    store(app).mkdir(parents=True, exist_ok=True)
    part = store(app) / f"{backup_id}.fake.archive.part"
    part.write_bytes(b"the job was killed here")
    report = check(app)
    assert report.orphan_files == [] and part.exists()
    run_jobs(app)  # the job, due again, writes the archive anew
    assert status_of(app, backup_id) == "available"
    assert not part.exists()


def test_a_missing_archive_fails_its_backup(app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    first = take(app, client, owner, project, instance["id"])
    second = take(app, client, owner, project, instance["id"])
    (store(app) / f"{first}.fake.archive").unlink()
    report = check(app)
    assert report.missing_archives == [first] and not report.store_unmounted
    assert (status_of(app, first), status_of(app, second)) == ("failed", "available")
    event = api(client, "GET", "/events", owner,
                query_string={"type": "backup.failed"}).get_json()["data"][0]
    assert event["data"]["backup"]["id"] == first
    assert "missing" in event["data"]["error"]


def test_a_store_that_lost_every_archive_looks_unmounted_and_nothing_is_failed(
        app, client, owner, project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    backup_id = take(app, client, owner, project, instance["id"])
    for path in store(app).iterdir():
        path.unlink()
    report = check(app)
    assert report.store_unmounted and report.missing_archives == []
    assert any("is it mounted" in line for line in report.lines())
    assert status_of(app, backup_id) == "available"


def test_interrupted_deletes_are_finished_and_stuck_states_settled(app, client, owner,
                                                                   project, catalog):
    instance = create_instance(app, client, owner, project, catalog)
    deleting = take(app, client, owner, project, instance["id"])
    restoring = take(app, client, owner, project, instance["id"])
    creating = take(app, client, owner, project, instance["id"], run=False)
    with app.app_context():
        # What a kill -9 leaves: a delete between its two steps, a restore and a backup
        # whose jobs are gone (finished without their handler's last step).
        Backup.update(status="deleting").where(Backup.id == deleting).execute()
        Backup.update(status="restoring").where(Backup.id == restoring).execute()
        Job.update(status="failed").where(Job.status == "queued").execute()
    report = check(app)
    assert report.finished_deletes == [deleting]
    assert sorted(report.settled) == sorted([restoring, creating])
    assert (status_of(app, deleting), status_of(app, restoring), status_of(app, creating)) == (
        "deleted", "available", "failed")
    assert not (store(app) / f"{deleting}.fake.archive").exists()
    assert check(app).clean


def test_the_command_reports_and_repairs(app, client, owner, project, catalog, data_dir):  # noqa: PLR0917
    instance = create_instance(app, client, owner, project, catalog)
    take(app, client, owner, project, instance["id"])
    stray = store(app) / "bak_0123456789abcdef0123.docker.archive"
    stray.write_bytes(b"left behind")
    runner = CliRunner()
    looked = runner.invoke(cli.main, ["check-backups", "--dry-run", "--data-dir",
                                      str(data_dir)])
    assert looked.exit_code == 1 and stray.name in looked.output and stray.exists()
    fixed = runner.invoke(cli.main, ["check-backups", "--data-dir", str(data_dir)])
    assert fixed.exit_code == 0 and not stray.exists()
    again = runner.invoke(cli.main, ["check-backups", "--dry-run", "--data-dir", str(data_dir)])
    assert (again.exit_code, again.output.strip()) == (0, "backups and the backup store agree")
