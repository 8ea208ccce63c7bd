"""Create-to-running on Incus and Docker: the appliance's API against the engine's own.

Measured by the `core` part after its loads (`--create-rounds`, 0 skips it): the seed also
prepares a plan of 1 vCPU / 128 MiB / 1 GB, a node per engine (the local Incus node the
server registered at its first start, a Docker node made like tests/test_engines_e2e.py)
with its discovered image TEST_IMAGE (appliance-test/busybox, imported by
scripts/engines; nothing is pulled), and a key of another service-made user with the
instance scopes. Per engine, after one unmeasured warm-up round (with `--warmup` > 0),
each round times both, the engine's first in odd rounds: (1) the engine's own path:
`incus launch IMAGE NAME -c limits.cpu=1 -c limits.memory=128MiB`, then the instance's
state over Incus's REST socket every `--job-poll` s until eth0 has a global IPv4
address; `docker run -d --name NAME --cpus 1 -m 128m IMAGE` (it returns once the
container runs; its address is there then) - and (2) the appliance's: POST
/api/v1/projects/<p>/instances (name, plan_id, image_id) -> 202, then GET
.../instances/<id> every `--job-poll` s (0.02; up to one interval plus a request is
added to the time) on one kept-alive connection until the API shows it running with an
IPv4 address. "Running" means running with an IPv4 address on both paths: the row
says running as soon as the engine runs the instance (the driver's `started`), and
gets its address from the job, which waits for one (up to 20 s); so the engine's is
counted to its first address too. The ratio of the medians, appliance / engine, has
target <= TARGET_CREATE_RATIO (1.3). The create job goes on after that (on Docker it
sets the password with an exec and watches the container keep running, work `docker
run` does not do): GET .../jobs/<id> is then polled until it succeeded, and that time
("to the job's end") is reported beside, with its ratio, without a target. The job's
own timestamps split that time (queued, running, polled); the steps the polls saw
are kept in the JSON. Every instance and container made is deleted (the
appliance's through DELETE and its job, then on the engine directly if anything is
left), also on failure. An engine that does not answer, or lacks the image or its
command-line client, is reported as skipped, which misses a target only under
`--strict`; a create that fails is an error and misses it.

The timed creates of each path are in benchmarks/creates.py, the seed in
benchmarks/seed.py.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
from typing import Any

from benchmarks.common import ApiClient, BenchError, Row, Server
from benchmarks.creates import (
    INCUS_SOCKET,
    CreateSample,
    appliance_create,
    appliance_delete,
    engine_create,
    engine_remove,
)
from benchmarks.seed import Seeded

CREATE_ENGINES = ("incus", "docker")
JOB_POLL_S = 0.02  # default --job-poll
TARGET_CREATE_RATIO = 1.3

CREATE_DEFINITION = ("running with an IPv4 address, on both paths: the appliance's API "
                     "shows the instance so; the engine's create+start returned and, on "
                     "Incus, eth0 has a global IPv4 address")


def create_round(api: ApiClient, seeded: Seeded, engine: str, round_no: int,
                 poll_s: float) -> tuple[CreateSample, CreateSample]:
    """One create on each path, the engine's first in odd rounds; each deleted after."""
    def own() -> CreateSample:
        name = f"bench-{engine}-{secrets.token_hex(4)}"
        try:
            return engine_create(engine, name, round_no, poll_s)
        finally:
            engine_remove(engine, name)

    def appliance() -> CreateSample:
        made: list[str] = []
        try:
            return appliance_create(api, seeded, engine, name=f"bench-{secrets.token_hex(4)}",
                                    round_no=round_no, poll_s=poll_s, made=made)
        finally:
            for instance_id in made:
                appliance_delete(api, seeded, engine, instance_id)

    if round_no % 2:
        engine_sample = own()
        return engine_sample, appliance()
    appliance_sample = appliance()
    return own(), appliance_sample


def measure_creates(appliance: Server, seeded: Seeded, args: argparse.Namespace,
                    ) -> tuple[list[CreateSample], dict[str, str]]:
    """Per engine, a warm-up round (with `--warmup` > 0) and `--create-rounds` rounds; the
    samples and each engine's outcome: measured, skipped: why, or error: what."""
    samples: list[CreateSample] = []
    outcomes: dict[str, str] = {}
    api = ApiClient(appliance.port, seeded.create_secret)
    try:
        for engine in args.engines:
            skipped = seeded.engines.get(engine, {}).get("skipped")
            if not skipped and not shutil.which(engine):
                skipped = f"the {engine} command is missing"
            if not skipped and engine == "incus" and not os.access(INCUS_SOCKET, os.W_OK):
                skipped = f"cannot use Incus's socket {INCUS_SOCKET}"
            if skipped:
                outcomes[engine] = f"skipped: {skipped}"
                print(f"  {engine}: skipped: {skipped}", flush=True)
                continue
            try:
                for round_no in range(0 if args.warmup > 0 else 1, args.create_rounds + 1):
                    own, mine = create_round(api, seeded, engine, round_no, args.job_poll)
                    print_create_round(own, mine)
                    if round_no:
                        samples += [own, mine]
                outcomes[engine] = "measured"
            except BenchError as exc:
                outcomes[engine] = f"error: {exc}"
                print(f"bench: ERROR: creating on {engine}: {exc}", file=sys.stderr, flush=True)
    finally:
        api.close()
    return samples, outcomes


def print_create_round(own: CreateSample, mine: CreateSample) -> None:
    d = mine.detail
    label = f"round {own.round}" if own.round else "warm-up"
    print(f"  {label:8} {own.engine:6} engine {own.seconds:6.3f} s  appliance "
          f"{mine.seconds:6.3f} s (job's end {d['done_s']:6.3f} s = 202 "
          f"{d['accepted_s'] * 1000:4.0f} ms, queued "
          f"{d['queued_s'] * 1000:3.0f} ms, job {d['job_s']:.3f} s, seen "
          f"+{d['after_job_s'] * 1000:3.0f} ms)", flush=True)


def summarize_creates(creates: list[CreateSample], outcomes: dict[str, str],
                      ) -> dict[str, Any]:
    """Per engine: its outcome and, when measured, the medians of each path, their ratio
    and the medians of the appliance's split (`create_<engine>_...`)."""
    metrics: dict[str, Any] = {}
    for engine, outcome in outcomes.items():
        prefix = f"create_{engine}"
        metrics[f"{prefix}_outcome"] = outcome
        if outcome != "measured":
            continue
        for path in ("appliance", "engine"):
            samples = [c for c in creates if c.engine == engine and c.path == path]
            metrics[f"{prefix}_{path}_s"] = statistics.median(c.seconds for c in samples)
            # The split's parts every sample has (a short step is not always seen).
            for key in sorted(set.intersection(*(set(c.detail) for c in samples))):
                metrics[f"{prefix}_{path}_{key}"] = statistics.median(c.detail[key]
                                                                      for c in samples)
        metrics[f"{prefix}_ratio"] = (metrics[f"{prefix}_appliance_s"]
                                      / metrics[f"{prefix}_engine_s"])
        metrics[f"{prefix}_done_ratio"] = (metrics[f"{prefix}_appliance_done_s"]
                                           / metrics[f"{prefix}_engine_s"])
    return metrics


def create_rows(m: dict[str, Any], strict: bool) -> list[Row]:
    """Rows of the create-to-running comparison; a skipped engine misses its target only
    when `strict`."""
    rows = []
    for engine in CREATE_ENGINES:
        prefix = f"create_{engine}"
        outcome = m.get(f"{prefix}_outcome")
        if outcome is None:
            continue
        metric = f"create to running+IPv4, {engine}: ratio appliance/engine"
        target = f"<= {TARGET_CREATE_RATIO}"
        if outcome != "measured":
            skipped = outcome.startswith("skipped")
            rows.append(Row(metric, outcome[:70], target, None if skipped and not strict
                            else False))
            continue
        ratio = m[f"{prefix}_ratio"]
        rows.append(Row(f"create to running+IPv4, {engine}: appliance / engine",
                        f"{m[f'{prefix}_appliance_s']:.3f} / {m[f'{prefix}_engine_s']:.3f} s",
                        "-", None))
        rows.append(Row(metric, f"{ratio:.2f}", target, ratio <= TARGET_CREATE_RATIO))
        rows.append(Row(f"  {engine} to the create job's end: ratio appliance/engine",
                        f"{m[f'{prefix}_appliance_done_s']:.3f} s: "
                        f"{m[f'{prefix}_done_ratio']:.2f}", "-", None))
        split = (f"202 {m[f'{prefix}_appliance_accepted_s'] * 1000:.0f} ms, queued "
                 f"{m[f'{prefix}_appliance_queued_s'] * 1000:.0f} ms, job "
                 f"{m[f'{prefix}_appliance_job_s']:.3f} s, seen "
                 f"+{m[f'{prefix}_appliance_after_job_s'] * 1000:.0f} ms")
        rows.append(Row(f"  {engine} job's end split (medians)", split, "-", None))
    return rows
