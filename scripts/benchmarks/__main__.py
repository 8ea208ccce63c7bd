"""scripts/bench's command line: parse the options, run the parts picked by `--only` and
`--skip`, write every number as JSON to `--output` and print the table.

Exit status: 0, also when a target is missed, unless `--strict` (then 1); 2 when a
measurement could not run (BenchError); 130 when interrupted (Ctrl-C or SIGTERM), after
the servers are stopped and the temporary directories removed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import backups, billing, billing_chart, binary, console, footprint, webhooks
from benchmarks import metrics as resource_metrics
from benchmarks.common import REPO_ROOT, BenchError, Row
from benchmarks.core import core_benchmark, rows_for, run_info
from benchmarks.engines import CREATE_ENGINES, JOB_POLL_S

AUTH_DURATION_MAX = 5  # default seconds per authenticated run: keeps a run near 3 min
BUSY_LOADAVG = 1.0  # 1-minute load average above which the numbers are flagged as noisy
# Parts of a run (--only / --skip): core is benchmarks/core.py with benchmarks/engines.py;
# metering and chart are in benchmarks/billing.py and benchmarks/billing_chart.py; binary
# (the single binary's start-up) in benchmarks/binary.py; footprint (RSS after a standard
# workload, the dashboard's pages) in benchmarks/footprint.py; console (keystroke-to-echo
# on Incus) in benchmarks/console.py; metrics (the resource sampling tick and the metrics
# endpoint) in benchmarks/metrics.py; backups (backup and restore on Incus against the
# engine's own commands) in benchmarks/backups.py.
PARTS = ("core", "footprint", "metering", "chart", "webhooks", "binary", "console",
         "metrics", "backups")


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The parts in `args.parts`: core, metering, chart, webhooks, binary, console,
    metrics."""
    report = core_benchmark(args, work) if "core" in args.parts else {
        "run": run_info(args), "metrics": {}, "targets": {}}
    metrics = report["metrics"]
    if "footprint" in args.parts:
        metrics.update(footprint.measure(work, args.auth_duration, args.dashboard_rounds,
                                         args.warmup))
    if {"metering", "chart"} & set(args.parts):
        metrics["billing_insert_rows_per_s"] = billing.insert_rate(work)
        print(f"baseline: SQLite batched insert {metrics['billing_insert_rows_per_s']:,.0f} "
              "rows/s", flush=True)
    if "metering" in args.parts:
        print(f"metering tick, {billing.METERING_INSTANCES:,} instances:", flush=True)
        metrics.update(billing.measure_metering(work))
    if "chart" in args.parts:
        print("GET /usage/chart?days=90 over ~10 million usage records:", flush=True)
        chart, runs = billing_chart.measure_chart(work, args.warmup)
        metrics.update(chart)
        report.setdefault("wrk_runs", []).extend(asdict(r) for r in runs)
    if "webhooks" in args.parts:
        metrics.update(webhooks.measure(work))
    if "binary" in args.parts:
        metrics.update(binary.measure(work, args.binary_rounds))
    if "console" in args.parts:
        metrics.update(console.measure(work))
    if "metrics" in args.parts:
        print("resource metrics: the sampling tick and GET .../metrics?window=7d:", flush=True)
        metrics.update(resource_metrics.measure(work, args.warmup))
    if "backups" in args.parts:
        print(f"backup and restore of a small Incus instance, {args.backup_rounds} rounds"
              f"{' after a warm-up round' if args.warmup > 0 else ''}:", flush=True)
        metrics.update(backups.measure(work, args))
    report["targets"] |= (footprint.TARGETS | billing.TARGETS | billing_chart.TARGETS
                          | webhooks.TARGETS | binary.TARGETS | console.TARGETS
                          | resource_metrics.TARGETS | backups.TARGETS)
    rows = all_rows(metrics, args.strict)
    report["checks"] = {row.metric: row.ok for row in rows if row.ok is not None}
    report["all_ok"] = all(row.ok for row in rows if row.ok is not None)
    report["table"] = [asdict(row) for row in rows]
    return report


def all_rows(metrics: dict[str, Any], strict: bool = False) -> list[Row]:
    rows = rows_for(metrics, strict) if "ratio" in metrics else []
    return (rows + footprint.rows(metrics, strict) + billing.rows(metrics)
            + billing_chart.rows(metrics)
            + webhooks.rows(metrics, strict) + binary.rows(metrics, strict)
            + console.rows(metrics, strict) + resource_metrics.rows(metrics)
            + backups.rows(metrics, strict))


def format_table(rows: list[Row]) -> str:
    cells = [("metric", "value", "target", "ok")] + [
        (r.metric, r.value, r.target, "-" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench",
        description="Benchmark the appliance's health, login, /auth/me, GET project and "
                    "GET instances (API key) endpoints, create-to-running on Incus and "
                    "Docker, start-up and memory.")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of wrk warm-up per server, not measured (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating baseline/appliance rounds (default 3)")
    parser.add_argument("--auth-duration", type=int, default=None,
                        help="seconds of each measured login, /auth/me and GET "
                             "project run "
                             f"(default --duration, at most {AUTH_DURATION_MAX})")
    parser.add_argument("--auth-rounds", type=int, default=3,
                        help="alternating login, /auth/me and GET project rounds "
                             "(default 3)")
    parser.add_argument("--dashboard-rounds", type=int, default=2,
                        help="rounds over the dashboard's pages (default 2), each page "
                             "--auth-duration seconds on one and on 8 connections")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="extra start-ups timed besides the load server's (default 2)")
    parser.add_argument("--binary-rounds", type=int, default=3,
                        help="alternating virtualenv/binary start-ups (default 3)")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds the appliance rests before its RSS is read (default 2)")
    parser.add_argument("--create-rounds", type=int, default=5,
                        help="alternating engine/appliance creates per engine after a "
                             "warm-up one (default 5; 0 skips them)")
    parser.add_argument("--engines", default=",".join(CREATE_ENGINES),
                        help="engines to create on, comma-separated (default "
                             f"{','.join(CREATE_ENGINES)})")
    parser.add_argument("--backup-rounds", type=int, default=3,
                        help="alternating engine/appliance backup+restore rounds on Incus "
                             "after a warm-up one (default 3)")
    parser.add_argument("--job-poll", type=float, default=JOB_POLL_S,
                        help="seconds between polls of a create job and of Incus's state "
                             f"(default {JOB_POLL_S})")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json",
                        help="JSON results file (default bench-results.json in the repo)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help="parts to run, comma-separated, from "
                             f"{','.join(PARTS)} (default all)")
    parser.add_argument("--skip", default="",
                        help="parts not to run, comma-separated (e.g. chart,webhooks)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any target is missed")
    args = parser.parse_args(argv)
    args.engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    only, skip = ({p.strip() for p in text.split(",") if p.strip()}
                  for text in (args.only, args.skip))
    if not only | skip <= set(PARTS):
        parser.error(f"--only and --skip take {', '.join(PARTS)}")
    args.parts = tuple(p for p in PARTS if p in only - skip)
    if not set(args.engines) <= set(CREATE_ENGINES) or args.create_rounds < 0:
        parser.error(f"--engines takes {' and '.join(CREATE_ENGINES)}; --create-rounds "
                     "must be >= 0")
    if not 0 < args.job_poll <= 1:
        parser.error("--job-poll must be between 0 and 1 s")
    if args.auth_duration is None:
        args.auth_duration = min(args.duration, AUTH_DURATION_MAX)
    if (min(args.duration, args.rounds, args.auth_duration, args.auth_rounds) < 1
            or args.warmup < 0 or args.startup_runs < 0 or args.binary_rounds < 1
            or args.dashboard_rounds < 1):
        parser.error("--duration, --rounds, --auth-duration, --auth-rounds and --binary-rounds "
                     "must be >= 1, --warmup and --startup-runs >= 0")
    return args


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped and temp dirs removed."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    load_before = os.getloadavg()[0]
    if load_before > BUSY_LOADAVG:
        print(f"note: load average {load_before:.2f} before the run; other processes compete "
              "for the CPUs, so throughput and latency will be noisy", flush=True)
    began = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="appliance-bench-") as work:
            report = benchmark(args, Path(work))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    report["run"]["wall_s"] = round(time.perf_counter() - began, 1)
    report["run"]["loadavg_1min_before"] = load_before
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(all_rows(report["metrics"], args.strict)))
    print(f"\nwall time {report['run']['wall_s']} s; results in {args.output}")
    if args.strict and not report["all_ok"]:
        return 1
    return 0


if __name__ == "__main__":
    # scripts/bench starts this in scripts/ so that `-m` finds the package; as before,
    # relative paths (--output) and the children's working directory are the repository's.
    os.chdir(REPO_ROOT)
    sys.exit(main(sys.argv[1:]))
