"""One timed create-to-running of TEST_IMAGE with PLAN's limits on each path, for the
create rounds of benchmarks/engines.py: the engine's own (`incus launch` and Incus's REST
socket, `docker run -d`) and the appliance's (POST the instance, poll the API until it
is running with an IPv4 address, then its job to the end), with their clean-up.

A create that fails or takes longer than CREATE_TIMEOUT_S raises BenchError.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.common import INSTANCES_PATH, PLAN, TEST_IMAGE, ApiClient, BenchError
from benchmarks.seed import Seeded

JOB_PATH = "/api/v1/projects/{project_id}/jobs/{job_id}"
INCUS_SOCKET = "/var/lib/incus/unix.socket"
DELETE_POLL_S = 0.05
CREATE_TIMEOUT_S = 90.0  # a create (or delete) taking longer is an error
ENGINE_CALL_TIMEOUT_S = 60


@dataclass
class CreateSample:
    """One timed create: the appliance's (POST to the API showing it running) or the
    engine's own."""

    engine: str
    path: str  # appliance | engine
    round: int
    seconds: float  # from the request to running with an IPv4 address
    detail: dict[str, float]  # the split: see appliance_create and engine_create


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket: Incus's REST API."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def incus_ipv4(conn: UnixHTTPConnection, name: str) -> str | None:
    """The first global IPv4 address of a running Incus instance, eth0 first (as the
    appliance's driver reads it), or None."""
    conn.request("GET", f"/1.0/instances/{name}/state")
    state = json.loads(conn.getresponse().read()).get("metadata") or {}
    if state.get("status") != "Running":
        return None
    networks = sorted((state.get("network") or {}).items(),
                      key=lambda item: (item[0] != "eth0", item[0]))
    for nic, network in networks:
        for address in (network.get("addresses") or []) if nic != "lo" else []:
            value = address.get("address", "")
            if (address.get("family") == "inet" and address.get("scope") == "global"
                    and not value.startswith(("127.", "169.254."))):
                return value
    return None


def engine_command(argv: list[str], what: str) -> str:
    """Run an engine's command-line client; its stdout. BenchError when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=ENGINE_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} took more than {ENGINE_CALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what} failed with status {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def engine_cli(engine: str) -> str:
    found = shutil.which(engine)
    if not found:
        raise BenchError(f"the {engine} command is missing")
    return found


def engine_remove(engine: str, name: str) -> None:
    """Remove an instance or container from the engine if it is there (not timed)."""
    argv = ([engine_cli(engine), "rm", "-f", name] if engine == "docker"
            else [engine_cli(engine), "delete", "-f", name])
    done = subprocess.run(argv, capture_output=True, text=True, check=False,
                          timeout=ENGINE_CALL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = (done.stderr or done.stdout).strip()
    if done.returncode != 0 and not re.search(r"no such|not found", output, re.IGNORECASE):
        print(f"bench: WARNING: {' '.join(argv[1:])} failed: {output[:300]}",
              file=sys.stderr, flush=True)


def engine_create(engine: str, name: str, round_no: int, poll_s: float) -> CreateSample:
    """The engine's own create+start of TEST_IMAGE with PLAN's limits, timed to running
    with an IPv4 address; detail `started_s`: when its command returned (running)."""
    cli = engine_cli(engine)
    began = time.perf_counter()
    if engine == "docker":
        engine_command([cli, "run", "-d", "--name", name, "--cpus", str(PLAN["vcpus"]),
                        "-m", f"{PLAN['memory_mb']}m", TEST_IMAGE], f"docker run {name}")
        seconds = time.perf_counter() - began
        shown = engine_command([cli, "inspect", "-f", "{{.State.Status}} {{range "
                                ".NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
                               f"docker inspect {name}").split()
        if shown[:1] != ["running"] or len(shown) < 2:  # checked after the clock stopped
            raise BenchError(f"docker run {name}: not running with an address: {shown}")
        return CreateSample(engine, "engine", round_no, seconds, {"started_s": seconds})
    engine_command([cli, "launch", TEST_IMAGE, name, "-q", "-c", f"limits.cpu={PLAN['vcpus']}",
                    "-c", f"limits.memory={PLAN['memory_mb']}MiB"], f"incus launch {name}")
    started = time.perf_counter() - began
    conn = UnixHTTPConnection(INCUS_SOCKET)
    try:
        while incus_ipv4(conn, name) is None:
            if time.perf_counter() - began > CREATE_TIMEOUT_S:
                raise BenchError(f"incus launch {name}: no IPv4 address after "
                                 f"{CREATE_TIMEOUT_S:.0f} s")
            time.sleep(poll_s)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise BenchError(f"asking Incus for the state of {name} failed: {exc}") from None
    finally:
        conn.close()
    return CreateSample(engine, "engine", round_no, time.perf_counter() - began,
                        {"started_s": started})


def wait_job(api: ApiClient, project_id: str, job_id: str, poll_s: float, *,
             began: float, steps: dict[str, float] | None = None) -> dict[str, Any]:
    """GET the job every `poll_s` s until it succeeded or failed; in `steps`, when each
    progress step of the unfinished job was first seen (seconds since `began`, a
    perf_counter; a step shorter than a poll is not seen)."""
    path = JOB_PATH.format(project_id=project_id, job_id=job_id)
    while True:
        status, job = api.call("GET", path)
        if status != 200 or not isinstance(job, dict):
            raise BenchError(f"GET {path} answered {status}: {job}")
        if job["status"] in ("succeeded", "failed"):
            return job
        if steps is not None:
            steps.setdefault(f"step{job['progress']['step']}_seen_s",
                             time.perf_counter() - began)
        if time.perf_counter() - began > CREATE_TIMEOUT_S:
            raise BenchError(f"job {job_id} ({job['type']}) did not finish within "
                             f"{CREATE_TIMEOUT_S:.0f} s: {job['progress']['message']}")
        time.sleep(poll_s)


def _timestamp(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def wait_running(api: ApiClient, path: str, poll_s: float, *, began: float) -> None:
    """GET the instance every `poll_s` s until the API shows it running with an IPv4
    address."""
    while True:
        status, instance = api.call("GET", path)
        if status != 200 or not isinstance(instance, dict):
            raise BenchError(f"GET {path} answered {status}: {instance}")
        if instance["status"] == "running" and instance["ipv4"]:
            return
        if instance["status"] == "failed":
            raise BenchError(f"the instance failed: {instance}")
        if time.perf_counter() - began > CREATE_TIMEOUT_S:
            raise BenchError(f"{path} was not running with an IPv4 address within "
                             f"{CREATE_TIMEOUT_S:.0f} s: {instance['status']}")
        time.sleep(poll_s)


def appliance_create(api: ApiClient, seeded: Seeded, engine: str, *, name: str,
                     round_no: int, poll_s: float, made: list[str]) -> CreateSample:
    """POST an instance of TEST_IMAGE, poll it until the API shows it running with an
    IPv4 address (the time measured), then its job to success (the id goes into `made` at
    once, for the clean-up). Detail: `accepted_s` (the 202), `done_s` (the job's success
    seen), `queued_s` and `job_s` (the job's own started - created and finished -
    started), `after_job_s` (finished to seen by the poll) and `stepN_seen_s` (when a poll
    first saw progress step N of the job, after the instance ran)."""
    base = INSTANCES_PATH.format(project_id=seeded.create_project_id)
    body = {"name": name, "plan_id": "bench-small",
            "image_id": seeded.engines[engine]["image_id"]}
    began_wall, began = time.time(), time.perf_counter()
    status, accepted = api.call("POST", base, body)
    accepted_s = time.perf_counter() - began
    if status != 202 or not isinstance(accepted, dict):
        raise BenchError(f"POST {base} answered {status}: {accepted}")
    made.append(accepted["instance"]["id"])
    wait_running(api, f"{base}/{made[-1]}", poll_s, began=began)
    seconds = time.perf_counter() - began
    steps: dict[str, float] = {}
    job = wait_job(api, seeded.create_project_id, accepted["job"]["id"], poll_s,
                   began=began, steps=steps)
    done_s = time.perf_counter() - began
    if job["status"] != "succeeded":
        raise BenchError(f"the create job on {engine} failed ({job['error_code']}): "
                         f"{job['error']}")
    status, instance = api.call("GET", f"{base}/{made[-1]}")  # checked, not timed
    if status != 200 or instance["status"] != "running" or not instance["ipv4"]:
        raise BenchError(f"after its create job the instance is not running with an IPv4 "
                         f"address: {status} {instance}")
    created, started, finished = (_timestamp(job[key])
                                  for key in ("created_at", "started_at", "finished_at"))
    return CreateSample(engine, "appliance", round_no, seconds, {
        "accepted_s": accepted_s, "done_s": done_s, "queued_s": started - created,
        "job_s": finished - started, "after_job_s": began_wall + done_s - finished, **steps})


def appliance_delete(api: ApiClient, seeded: Seeded, engine: str, instance_id: str) -> None:
    """DELETE the instance and wait for its job; if that fails, remove it on the engine."""
    path = f"{INSTANCES_PATH.format(project_id=seeded.create_project_id)}/{instance_id}"
    try:
        status, body = api.call("DELETE", path)
        if status != 202:
            raise BenchError(f"DELETE {path} answered {status}: {body}")
        job = wait_job(api, seeded.create_project_id, body["job"]["id"], DELETE_POLL_S,
                       began=time.perf_counter())
        if job["status"] != "succeeded":
            raise BenchError(f"the delete job failed: {job['error']}")
    except BenchError as exc:
        print(f"bench: WARNING: deleting {instance_id} through the API: {exc}; removing it "
              "on the engine", file=sys.stderr, flush=True)
        engine_remove(engine, "ins-" + instance_id.removeprefix("ins_"))
