"""Backups on real Incus and real Docker, through the HTTP API of a served appliance only,
with the engine's own view checked by its command line (`incus` / `docker`).

- A file written inside the instance (`incus exec` / `docker exec`) is backed up; it is
  changed and deleted; the restore brings it back with its old content. The instance is
  deleted keeping nothing; a new one made from the backup has the file. Once everything
  is deleted, the engine and the backup store hold nothing of it.
- An instance backed up while a process writes to it gives an archive that restores,
  and the instance runs.

Run wherever the engines answer (scripts/engines); under CI=true a missing engine fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from appliance import create_app, drivers
from appliance.services.instances import backup_check
from tests.conftest import Server
from tests.test_engines_e2e import Client, _prepare

ENGINES = ["incus", "docker"]


def _serve(data_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir)})
    server.wait()
    return server


def inside(engine: str, ref: str, script: str) -> subprocess.CompletedProcess:
    """Run a shell script in the instance with the engine's own command line."""
    argv = (["incus", "exec", ref, "--", "sh", "-c", script] if engine == "incus"
            else ["docker", "exec", ref, "sh", "-c", script])
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          check=True).stdout


def engine_names(engine: str) -> set[str]:
    """Every instance (Incus) or container (Docker) the engine has, by name."""
    return set(_output(["incus", "list", "--format", "csv", "-c", "n"] if engine == "incus"
                       else ["docker", "ps", "-a", "--format", "{{.Names}}"]).split())


def engine_images(engine: str) -> set[str]:
    """Images the engine holds that the appliance made (transfers, restores, exports)."""
    if engine == "docker":
        listed = _output(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"])
        return {line for line in listed.split() if line.startswith("appliance-")
                and not line.startswith("appliance-test/")}
    images = json.loads(_output(["incus", "query", "/1.0/images?recursion=1"]))
    return {image["fingerprint"] for image in images
            if "appliance.transfer" in (image.get("properties") or {})}


def snapshots(engine: str, ref: str) -> list[str]:
    if engine != "incus":
        return []
    return json.loads(_output(["incus", "query", f"/1.0/instances/{ref}/snapshots"]))


def ref_of(instance: dict) -> str:
    return "ins-" + instance["id"].removeprefix("ins_")


class Backups:
    """The API calls of these tests, each checked."""

    def __init__(self, api: Client) -> None:
        self.api = api
        self.base = f"/projects/{api.project}/instances"

    def create_instance(self, name: str, **source) -> dict:
        created = self.api.accepted("POST", self.base, name=name, plan_id="small", **source)
        assert self.api.finish(created["job"])["status"] == "succeeded", created
        return self.api.get(f"{self.base}/{created['instance']['id']}")

    def back_up(self, instance: dict, name: str) -> dict:
        accepted = self.api.accepted("POST", f"{self.base}/{instance['id']}/backups",
                                     name=name)
        job = self.api.finish(accepted["job"])
        assert job["status"] == "succeeded", job
        return self.api.get(f"{self.base}/{instance['id']}/backups/"
                            f"{accepted['backup']['id']}")

    def restore(self, instance: dict, backup: dict) -> dict:
        accepted = self.api.accepted(
            "POST", f"{self.base}/{instance['id']}/backups/{backup['id']}/restore")
        job = self.api.finish(accepted["job"])
        assert job["status"] == "succeeded", job
        return self.api.get(f"{self.base}/{instance['id']}")

    def delete_instance(self, instance: dict) -> None:
        accepted = self.api.accepted("DELETE", f"{self.base}/{instance['id']}")
        assert self.api.finish(accepted["job"])["status"] == "succeeded"

    def delete_backup(self, backup: dict) -> None:
        response = self.api.session.delete(
            f"{self.api.url}/projects/{self.api.project}/backups/{backup['id']}", timeout=60)
        assert response.status_code == 204, response.text


def _cleanup(engine: str, refs: list[str]) -> None:
    driver = drivers.connect(engine, "")
    for ref in refs:
        driver.delete(ref)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_backup_restores_old_files_and_makes_a_new_instance(tmp_path, engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    images_before = engine_images(engine)
    server = _serve(data_dir)
    refs: list[str] = []
    try:
        calls = Backups(Client(server.url))
        first = calls.create_instance("bk-first", image_id=image_id)
        refs.append(ref_of(first))
        written = inside(engine, ref_of(first),
                         "mkdir -p /srv && printf 'the old content' > /srv/kept.txt")
        assert written.returncode == 0, written.stderr

        backup = calls.back_up(first, "before the change")
        assert (backup["status"], backup["engine"]) == ("available", engine)
        archive = data_dir / "backups" / f"{backup['id']}.{engine}.archive"
        assert archive.stat().st_size == backup["size_bytes"]
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == backup["sha256"]
        # While the backup is kept, the engine keeps nothing of it.
        assert engine_images(engine) - images_before == set()
        assert snapshots(engine, ref_of(first)) == []

        changed = inside(engine, ref_of(first), "printf 'new content' > /srv/kept.txt && "
                                                "cat /srv/kept.txt && rm /srv/kept.txt")
        assert (changed.returncode, changed.stdout) == (0, "new content")
        assert inside(engine, ref_of(first), "cat /srv/kept.txt").returncode != 0

        restored = calls.restore(first, backup)
        assert (restored["status"], restored["power_state"]) == ("running", "running")
        assert inside(engine, ref_of(first), "cat /srv/kept.txt").stdout == "the old content"
        # Docker runs the restored container from an image of its own, which goes with it.
        own = {f"appliance-restored/{ref_of(first)}:latest"} if engine == "docker" else set()
        assert engine_images(engine) - images_before == own

        calls.delete_instance(first)  # keeping nothing
        assert ref_of(first) not in engine_names(engine)

        second = calls.create_instance("bk-second", backup_id=backup["id"])
        refs.append(ref_of(second))
        assert second["status"] == "running"
        assert inside(engine, ref_of(second), "cat /srv/kept.txt").stdout == "the old content"
        assert inside(engine, ref_of(second), "hostname").stdout.strip() == ref_of(second)

        calls.delete_instance(second)
        calls.delete_backup(backup)
        assert not archive.exists()
        assert list((data_dir / "backups").iterdir()) == []
        assert engine_names(engine).isdisjoint(refs)
        assert engine_images(engine) - images_before == set()
        if engine == "docker":  # nothing tagged for either instance remains
            assert not any(ref in tag for tag in engine_images(engine) for ref in refs)
    finally:
        server.stop()
        _cleanup(engine, refs)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_instance_backed_up_while_it_writes_restores_and_runs(tmp_path, engine):
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    server = _serve(data_dir)
    refs: list[str] = []
    try:
        calls = Backups(Client(server.url))
        busy = calls.create_instance("bk-busy", image_id=image_id)
        refs.append(ref_of(busy))
        # A writer that runs on after the exec returns (its output goes nowhere).
        started = inside(engine, ref_of(busy),
                         "setsid sh -c 'n=0; while :; do n=$((n+1)); echo \"line $n\" >> "
                         "/root/busy.log; done' > /dev/null 2>&1 < /dev/null &")
        assert started.returncode == 0, started.stderr
        time.sleep(0.5)
        before = inside(engine, ref_of(busy), "wc -l < /root/busy.log").stdout.strip()
        assert int(before) > 0

        backup = calls.back_up(busy, "while writing")
        restored = calls.restore(busy, backup)
        assert (restored["status"], restored["power_state"]) == ("running", "running")
        lines = inside(engine, ref_of(busy), "wc -l < /root/busy.log")
        assert lines.returncode == 0 and int(lines.stdout) >= int(before)
        assert inside(engine, ref_of(busy), "head -n 1 /root/busy.log").stdout == "line 1\n"
        assert inside(engine, ref_of(busy), "echo alive").stdout == "alive\n"

        copy = calls.create_instance("bk-copy", backup_id=backup["id"])
        refs.append(ref_of(copy))
        assert copy["status"] == "running"
        assert inside(engine, ref_of(copy), "head -n 1 /root/busy.log").stdout == "line 1\n"

        for instance in (busy, copy):
            calls.delete_instance(instance)
        calls.delete_backup(backup)
        assert engine_names(engine).isdisjoint(refs)
    finally:
        server.stop()
        _cleanup(engine, refs)


def _running(api: Client, job: dict, timeout: float = 30.0) -> dict:
    """The job once the runner has it under way."""
    deadline = time.monotonic() + timeout
    while True:
        found = api.get(f"/projects/{api.project}/jobs/{job['id']}")
        if found["status"] != "queued":
            return found
        assert time.monotonic() < deadline, f"job {job['id']} never started"
        time.sleep(0.02)


@pytest.mark.parametrize("operation", ["backup", "restore"])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_kill_during_a_backup_or_restore_ends_the_job_and_leaves_nothing(tmp_path, engine,
                                                                           operation):
    """`kill -9` of the serving process while its job works on the engine: after the
    restart the job ends (succeeded, or failed), the instance runs, and the backup check
    finds nothing to repair - the start-up's check already did."""
    data_dir = tmp_path / "data"
    image_id = _prepare(data_dir, engine)
    images_before = engine_images(engine)
    server = _serve(data_dir)
    refs: list[str] = []
    try:
        calls = Backups(Client(server.url))
        instance = calls.create_instance("bk-crash", image_id=image_id)
        refs.append(ref_of(instance))
        # 48 MB of noise: an export or restore that takes a moment, to be killed in.
        filled = inside(engine, ref_of(instance), "printf 'before' > /root/marker && "
                        "dd if=/dev/urandom of=/root/noise bs=1M count=48 2>/dev/null")
        assert filled.returncode == 0, filled.stderr
        path = f"{calls.base}/{instance['id']}/backups"
        if operation == "restore":
            backup = calls.back_up(instance, "before")
            inside(engine, ref_of(instance), "printf 'after' > /root/marker")
            accepted = calls.api.accepted("POST", f"{path}/{backup['id']}/restore")
        else:
            accepted = calls.api.accepted("POST", path, name="killed")
            backup = accepted["backup"]
        assert _running(calls.api, accepted["job"])["status"] == "running"
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)

        server = _serve(data_dir)
        calls = Backups(Client(server.url))
        job = calls.api.finish(accepted["job"])
        assert job["status"] in ("succeeded", "failed"), job
        assert job["attempts"] >= 2  # it was under way when killed, and ran again
        shown = calls.api.get(f"{calls.base}/{instance['id']}")
        assert (shown["status"], shown["power_state"]) == ("running", "running")
        assert drivers.connect(engine, "").state(ref_of(instance)).power == "running"
        kept = calls.api.get(f"{path}/{backup['id']}")
        if job["status"] == "succeeded":
            assert kept["status"] == "available"
            archive = data_dir / "backups" / f"{backup['id']}.{engine}.archive"
            assert hashlib.sha256(archive.read_bytes()).hexdigest() == kept["sha256"]
            if operation == "restore":
                assert inside(engine, ref_of(instance), "cat /root/marker").stdout == "before"
        else:
            assert kept["status"] == ("failed" if operation == "backup" else "available")
    finally:
        server.stop()
    try:
        _assert_nothing_left(data_dir, engine, ref_of(instance), images_before)
    finally:
        _cleanup(engine, refs)


def _assert_nothing_left(data_dir, engine: str, ref: str, images_before: set[str]) -> None:
    """The backup check finds nothing, and the engine holds no temporary object."""
    app = create_app({"DATA_DIR": str(data_dir)})
    with app.app_context():
        report = backup_check.check(repair=False)
    assert report.clean and not report.problems, report.lines()
    own = {f"appliance-restored/{ref}:latest"} if engine == "docker" else set()
    assert engine_images(engine) - images_before - own == set()
    assert snapshots(engine, ref) == []
