"""Backup and restore of a small Incus instance: the appliance's API against the engine's
own commands doing what the Incus driver does (appliance/drivers/incus/copies.py), on
the same instance in the same run.

A real `appliance serve` with the local Incus node (TEST_IMAGE discovered, PLAN's 1 vCPU
/ 128 MiB / 1 GB) and a key with the backup scopes (made in a child interpreter like
benchmarks/seed.py). One instance is created through the API; then, after one unmeasured
warm-up round (with `--warmup` > 0), each of `--backup-rounds` rounds times, the
engine's first in odd rounds:

* backup - the engine: `incus snapshot create`, `incus publish` of the snapshot,
  `incus image export` into a file, `incus snapshot delete` and `incus image delete`
  (the driver's export_archive step by step); the appliance: POST .../backups -> 202,
  then GET its job every `--job-poll` s until it succeeded (the archive is then in the
  store with its size and sha256).
* restore - the engine: `incus image import` of the file just exported, `incus stop
  -f`, `incus rebuild`, `incus start`, `incus image delete` (restore_archive); the
  appliance: POST .../backups/<id>/restore -> 202 and its job to success (the checksum
  checked, the disk rebuilt, the instance started again).

The ratio of the medians, appliance / engine, has target <= TARGET_RATIO (1.3) for each.
The job's own timestamps (queued, running) are kept per sample in the JSON. Everything
made is deleted afterwards (the instance and its backups through the API, the engine's
files and images directly), also on failure. Incus not answering, or without the image,
is reported as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.common import (
    INSTANCES_PATH,
    SCRIPTS_DIR,
    ApiClient,
    BenchError,
    Row,
    running,
    server_env,
    start_appliance,
    wait_healthy,
)
from benchmarks.creates import (
    _timestamp,
    appliance_create,
    appliance_delete,
    engine_command,
    wait_job,
)

TARGET_RATIO = 1.3
TARGETS = {"backup_ratio_max": TARGET_RATIO, "restore_ratio_max": TARGET_RATIO}
KEY_SCOPES = ("instances:read", "instances:write", "instances:delete", "backups:write")
SEED_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import backups; "
             "backups.seed_in_this_process(sys.argv[2], sys.argv[3])")


def seed_in_this_process(data_dir: str, result_path: str) -> None:
    """A user with a key of KEY_SCOPES, the bench plan, the Incus node and its image."""
    from appliance import create_app
    from appliance.services.accounts import users
    from benchmarks import seed

    app = create_app({"DATA_DIR": data_dir})
    with app.app_context():
        user = users.create_user("bench-backups@example.com", secrets.token_urlsafe(18),
                                 verified=True)
        seed.bench_plan()
        seed.CREATE_KEY_SCOPES = KEY_SCOPES  # the creates' key, with the backup scope
        prepared = seed.prepare_creates(user, ["incus"])
    Path(result_path).write_text(json.dumps(prepared))


def _seed(server: Any, work: Path) -> dict[str, Any]:
    result = work / "backups-seeded.json"
    argv = [sys.executable, "-c", SEED_CODE, str(SCRIPTS_DIR), str(server.data_dir),
            str(result)]
    done = subprocess.run(argv, capture_output=True, text=True, env=server_env(), timeout=120,
                          stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0 or not result.exists():
        raise BenchError(f"seeding for the backups part failed: {done.stdout}{done.stderr}")
    return json.loads(result.read_text())


def _incus(*argv: str) -> str:
    cli = shutil.which("incus")
    if cli is None:
        raise BenchError("the incus command is missing")
    return engine_command([cli, *argv], "incus " + " ".join(argv[:2]))


def engine_backup(ref: str, archive: Path) -> float:
    """The driver's export_archive by hand: seconds."""
    snapshot, alias = f"bench-{secrets.token_hex(4)}", f"bench-export-{secrets.token_hex(4)}"
    began = time.perf_counter()
    _incus("snapshot", "create", ref, snapshot)
    shown = _incus("publish", f"{ref}/{snapshot}", "--alias", alias)
    _incus("snapshot", "delete", ref, snapshot)
    # By fingerprint: an unchanged disk publishes the same image as before, whose alias
    # may be another's.
    found = re.search(r"fingerprint:\s*([0-9a-f]{12,})", shown)
    image = found.group(1) if found else alias
    _incus("image", "export", image, str(archive), "-q")
    _incus("image", "delete", image)
    return time.perf_counter() - began


def engine_restore(ref: str, archive: Path) -> float:
    """The driver's restore_archive by hand (the instance runs before and after)."""
    alias = f"bench-import-{secrets.token_hex(4)}"
    began = time.perf_counter()
    _incus("image", "import", str(archive), "--alias", alias, "-q")
    _incus("stop", "-f", ref)
    _incus("rebuild", alias, ref)
    _incus("start", ref)
    _incus("image", "delete", alias)
    return time.perf_counter() - began


def _job_split(job: dict[str, Any]) -> dict[str, float]:
    created, started, finished = (_timestamp(job[key])
                                  for key in ("created_at", "started_at", "finished_at"))
    return {"queued_s": started - created, "job_s": finished - started}


def appliance_job(api: ApiClient, project_id: str, path: str, poll_s: float,
                  ) -> tuple[float, dict[str, Any], dict[str, float]]:
    """POST `path` (202 with a job), then its job to success: seconds, body, split."""
    began = time.perf_counter()
    status, accepted = api.call("POST", path, {})
    if status != 202 or not isinstance(accepted, dict):
        raise BenchError(f"POST {path} answered {status}: {accepted}")
    job = wait_job(api, project_id, accepted["job"]["id"], poll_s, began=began)
    seconds = time.perf_counter() - began
    if job["status"] != "succeeded":
        raise BenchError(f"{job['type']} failed ({job['error_code']}): {job['error']}")
    return seconds, accepted, _job_split(job)


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:  # noqa: PLR0915 - one measured sequence
    """The backups part's metrics (see the module docstring)."""
    samples: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(running(start_appliance(work, "backups")))
        wait_healthy(server)
        seeded = _seed(server, work)
        incus = seeded["engines"]["incus"]
        if "skipped" in incus:
            print(f"  backups: skipped: {incus['skipped']}", flush=True)
            return {"backups_skipped": incus["skipped"]}
        api = ApiClient(server.port, seeded["create_secret"])
        stack.callback(api.close)
        project_id = seeded["create_project_id"]
        made: list[str] = []
        target_of = SimpleNamespace(create_project_id=project_id, engines={"incus": incus})
        appliance_create(api, target_of,  # type: ignore[arg-type]
                         "incus", name=f"bench-bak-{secrets.token_hex(3)}", round_no=0,
                         poll_s=args.job_poll, made=made)
        instance_id = made[0]
        stack.callback(lambda: appliance_delete(api, target_of,  # type: ignore[arg-type]
                                                "incus", instance_id))
        ref = "ins-" + instance_id.removeprefix("ins_")
        base = f"{INSTANCES_PATH.format(project_id=project_id)}/{instance_id}/backups"
        files = work / "backups-files"
        files.mkdir(exist_ok=True)
        stack.callback(shutil.rmtree, files, True)
        rounds = args.backup_rounds + (1 if args.warmup > 0 else 0)
        for round_no in range(rounds):
            target = files / f"engine-{round_no}"

            def own_backup(target: Path = target) -> float:
                seconds = engine_backup(ref, target)
                return seconds

            def ours() -> tuple[float, dict[str, Any], dict[str, float]]:
                return appliance_job(api, project_id, base, args.job_poll)

            sample: dict[str, Any] = {"round": round_no, "warmup": args.warmup > 0
                                      and round_no == 0}
            if round_no % 2:
                sample["engine_backup_s"] = own_backup()
                sample["backup_s"], accepted, sample["backup_split"] = ours()
            else:
                sample["backup_s"], accepted, sample["backup_split"] = ours()
                sample["engine_backup_s"] = own_backup()
            # incus names the file after the image's compression (.tar.gz, .tar.xz, ...)
            written = sorted(files.glob(f"{target.name}*"))
            if not written:
                raise BenchError(f"incus image export wrote nothing at {target}")
            archive = written[0]
            backup_id = accepted["backup"]["id"]
            restore = f"{base}/{backup_id}/restore"
            if round_no % 2:
                sample["engine_restore_s"] = engine_restore(ref, archive)
                sample["restore_s"], _, sample["restore_split"] = appliance_job(
                    api, project_id, restore, args.job_poll)
            else:
                sample["restore_s"], _, sample["restore_split"] = appliance_job(
                    api, project_id, restore, args.job_poll)
                sample["engine_restore_s"] = engine_restore(ref, archive)
            status, shown = api.call("GET", f"{base}/{backup_id}")
            sample["archive_bytes"] = shown.get("size_bytes") if status == 200 else None
            sample["engine_archive_bytes"] = archive.stat().st_size
            api.call("DELETE", f"{base}/{backup_id}")
            archive.unlink(missing_ok=True)
            samples.append(sample)
            print(f"  round {round_no}{' (warm-up)' if sample['warmup'] else ''}: backup "
                  f"{sample['backup_s']:.2f} s vs incus {sample['engine_backup_s']:.2f} s; "
                  f"restore {sample['restore_s']:.2f} s vs incus "
                  f"{sample['engine_restore_s']:.2f} s", flush=True)
    measured = [s for s in samples if not s["warmup"]]
    metrics: dict[str, Any] = {"backup_samples": samples}
    for what in ("backup", "restore"):
        ours_s = statistics.median(s[f"{what}_s"] for s in measured)
        engine_s = statistics.median(s[f"engine_{what}_s"] for s in measured)
        metrics[f"{what}_s"] = ours_s
        metrics[f"engine_{what}_s"] = engine_s
        metrics[f"{what}_ratio"] = ours_s / engine_s
    return metrics


def rows(m: dict[str, Any], strict: bool = False) -> list[Row]:
    if "backups_skipped" in m:
        return [Row("backup/restore vs incus", "skipped", f"<= {TARGET_RATIO}",
                    False if strict else None)]
    if "backup_ratio" not in m:
        return []
    return [Row(f"{what} vs incus (median {m[f'{what}_s']:.2f} s / "
                f"{m[f'engine_{what}_s']:.2f} s)", f"{m[f'{what}_ratio']:.2f}",
                f"<= {TARGET_RATIO}", m[f"{what}_ratio"] <= TARGET_RATIO)
            for what in ("backup", "restore")]
