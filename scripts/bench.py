"""Benchmark the appliance: health throughput and latency, start-up time, idle memory.

What it measures, each on 127.0.0.1 with processes started here and stopped at the end:

* health requests/s: `wrk` (1 thread, 8 connections, `--duration` seconds after one
  `--warmup` per server) loads GET /api/v1/health of the appliance (`appliance serve
  --threads 8`) and of a baseline, a bare Flask app with only that route on waitress with
  the same settings. The two are loaded alternately for `--rounds` rounds and the median
  of each is reported, so noise on a small machine matters less. The ratio appliance /
  baseline is what the appliance's own request path (hooks, metrics, error handling)
  costs on top of Flask and waitress; 1.0 means nothing, the target is >= 0.8.
* p50 / p99 latency of the appliance under that load (median over the rounds), from
  wrk's `--latency` distribution.
* start-up time: from spawning `appliance serve` on a fresh data directory (so every
  migration runs and the secrets are generated) to the first 200 from GET
  /api/v1/health, polled every 10 ms; median of `--startup-runs` starts. Target < 1.5 s.
* idle RSS: VmRSS of the appliance process after start-up and `--idle` seconds of
  rest, before any load. Target < 80 MB.

The table has one row per metric with its target and whether it is met ("-" when the
row has no target); every number, each wrk run included, is also written as JSON to
`--output`. The exit status is 0 even when a target is missed, unless `--strict`.
APPLIANCE_* variables are removed from the servers' environment, so the appliance runs
with its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
HEALTH_PATH = "/api/v1/health"
HOST = "127.0.0.1"
THREADS = 8
CONNECTIONS = 8
POLL_INTERVAL_S = 0.01
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0

TARGET_RATIO = 0.8
TARGET_STARTUP_S = 1.5
TARGET_RSS_MB = 80.0

BASELINE_APP = f'''\
"""Baseline for scripts/bench: Flask with one route, on waitress like the appliance."""
import sys

from flask import Flask
from waitress import serve

app = Flask(__name__)


@app.get("{HEALTH_PATH}")
def health():
    return {{"ok": True}}


serve(app, host="{HOST}", port=int(sys.argv[1]), threads={THREADS}, ident="baseline")
'''

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class BenchError(Exception):
    """The benchmark could not run (a server did not start, wrk failed)."""


@dataclass
class WrkResult:
    server: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int


@dataclass
class Row:
    metric: str
    value: str
    target: str
    ok: bool | None


# --- processes -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """The harness's environment without APPLIANCE_* settings."""
    return {key: value for key, value in os.environ.items() if not key.startswith("APPLIANCE_")}


class Server:
    """A server process with its log file; `stop` terminates it, then kills it."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.spawned_at = time.perf_counter()
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=server_env(), cwd=log_path.parent, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def health_status(port: int) -> int | None:
    """The status of one GET /api/v1/health, or None when nothing answers yet."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request("GET", HEALTH_PATH)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def wait_healthy(server: Server) -> float:
    """Poll until the first 200; return the seconds since the process was spawned."""
    while True:
        if health_status(server.port) == 200:
            return time.perf_counter() - server.spawned_at
        if server.process.poll() is not None:
            raise BenchError(f"{server.name} exited with status {server.process.returncode}:\n"
                             f"{server.log_tail()}")
        if time.perf_counter() - server.spawned_at > START_TIMEOUT_S:
            raise BenchError(f"{server.name} did not answer {HEALTH_PATH} with 200 within "
                             f"{START_TIMEOUT_S:.0f} s:\n{server.log_tail()}")
        time.sleep(POLL_INTERVAL_S)


def appliance_bin() -> str:
    """`appliance` next to the running interpreter (the test venv's), else on PATH."""
    candidate = Path(sys.executable).parent / "appliance"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("appliance")
    if not found:
        raise BenchError("the `appliance` command is missing; run this through scripts/bench")
    return found


def start_appliance(work: Path, name: str) -> Server:
    """Spawn `appliance serve` on a fresh data directory under `work`."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    port = free_port()
    argv = [appliance_bin(), "serve", "--host", HOST, "--port", str(port),
            "--threads", str(THREADS), "--data-dir", str(run_dir / "data")]
    return Server(name, argv, port, run_dir / "server.log")


def start_baseline(work: Path) -> Server:
    """Spawn the bare Flask + waitress baseline, its module written into `work`."""
    module = work / "baseline_app.py"
    module.write_text(BASELINE_APP)
    port = free_port()
    return Server("baseline", [sys.executable, str(module), str(port)], port,
                  work / "baseline.log")


def rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (MiB), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


# --- wrk ---------------------------------------------------------------------------


def to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit] * 1000


def parse_wrk(output: str, server: str, round_no: int) -> WrkResult:
    """Requests/s, p50, p99 and error counts from wrk's `--latency` report."""
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    latencies = {match[1]: to_ms(match[2], match[3]) for match in _LATENCY_RE.finditer(output)}
    if not rps or not requests or set(latencies) != {"50", "99"}:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    non_2xx = _NON_2XX_RE.search(output)
    errors = _SOCKET_ERRORS_RE.search(output)
    return WrkResult(
        server=server, round=round_no, requests_per_s=float(rps[1]),
        p50_ms=latencies["50"], p99_ms=latencies["99"], requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0)


def wrk_bin() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is missing; run this through scripts/bench, which installs it")
    return found


def run_wrk(port: int, duration_s: int) -> str:
    """Load GET /api/v1/health for `duration_s` seconds; return wrk's report."""
    argv = [wrk_bin(), "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency",
            f"http://{HOST}:{port}{HEALTH_PATH}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    return done.stdout


def load(server: Server, duration_s: int, round_no: int) -> WrkResult:
    result = parse_wrk(run_wrk(server.port, duration_s), server.name, round_no)
    print(f"  round {round_no} {server.name:9} {result.requests_per_s:9.1f} req/s  "
          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    if result.non_2xx or result.socket_errors:
        print(f"    warning: {result.non_2xx} non-2xx responses, "
              f"{result.socket_errors} socket errors", flush=True)
    return result


# --- the measurements ------------------------------------------------------------------


def measure_startup(work: Path, runs: int) -> list[float]:
    """Seconds to the first healthy answer, one fresh data directory per start."""
    samples = []
    for index in range(runs):
        with running(start_appliance(work, f"startup{index}")) as server:
            samples.append(wait_healthy(server))
        print(f"  start-up {index + 1}/{runs}: {samples[-1]:.3f} s", flush=True)
    return samples


def measure_load(appliance: Server, baseline: Server, args: argparse.Namespace,
                 ) -> list[WrkResult]:
    """Warm each server up once, then load them alternately for `args.rounds` rounds."""
    if args.warmup > 0:
        for server in (baseline, appliance):
            run_wrk(server.port, args.warmup)
    results = []
    for round_no in range(1, args.rounds + 1):
        for server in (baseline, appliance):
            results.append(load(server, args.duration, round_no))
    return results


def median_of(results: list[WrkResult], server: str, field: str) -> float:
    return statistics.median(getattr(r, field) for r in results if r.server == server)


def summarize(results: list[WrkResult], startup: list[float], idle_rss: float,
              ) -> dict[str, float]:
    metrics = {
        f"{server}_{field}": median_of(results, server, field)
        for server in ("baseline", "appliance")
        for field in ("requests_per_s", "p50_ms", "p99_ms")
    }
    metrics["ratio"] = metrics["appliance_requests_per_s"] / metrics["baseline_requests_per_s"]
    metrics["startup_s"] = statistics.median(startup)
    metrics["idle_rss_mb"] = idle_rss
    return metrics


def rows_for(metrics: dict[str, float]) -> list[Row]:
    m = metrics
    return [
        Row("baseline health req/s", f"{m['baseline_requests_per_s']:.1f}", "-", None),
        Row("appliance health req/s", f"{m['appliance_requests_per_s']:.1f}", "-", None),
        Row("ratio appliance/baseline", f"{m['ratio']:.3f}", f">= {TARGET_RATIO}",
            m["ratio"] >= TARGET_RATIO),
        Row(f"appliance p50 @ {CONNECTIONS} conns", f"{m['appliance_p50_ms']:.2f} ms", "-", None),
        Row(f"appliance p99 @ {CONNECTIONS} conns", f"{m['appliance_p99_ms']:.2f} ms", "-", None),
        Row(f"baseline p50 / p99 @ {CONNECTIONS} conns",
            f"{m['baseline_p50_ms']:.2f} / {m['baseline_p99_ms']:.2f} ms", "-", None),
        Row("start-up to first 200", f"{m['startup_s']:.3f} s", f"< {TARGET_STARTUP_S} s",
            m["startup_s"] < TARGET_STARTUP_S),
        Row("idle RSS", f"{m['idle_rss_mb']:.1f} MB", f"< {TARGET_RSS_MB:.0f} MB",
            m["idle_rss_mb"] < TARGET_RSS_MB),
    ]


def format_table(rows: list[Row]) -> str:
    cells = [("metric", "value", "target", "ok")] + [
        (r.metric, r.value, r.target, "-" if r.ok is None else ("yes" if r.ok else "NO"))
        for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def first_line(argv: list[str]) -> str | None:
    """The first line a command prints (stdout, else stderr), or None."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else None


def run_info(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": first_line([shutil.which("git") or "git", "-C", str(REPO_ROOT),
                              "describe", "--always", "--dirty"]),
        "python": platform.python_version(),
        "wrk": first_line([wrk_bin(), "--version"]),
        "cpus": os.cpu_count(),
        "threads": THREADS,
        "connections": CONNECTIONS,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "startup_runs": args.startup_runs,
        "idle_s": args.idle,
    }


def benchmark(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    print("start-up (fresh data directories):", flush=True)
    startup = measure_startup(work, args.startup_runs)
    with contextlib.ExitStack() as stack:
        appliance = stack.enter_context(running(start_appliance(work, "appliance")))
        startup.append(wait_healthy(appliance))
        print(f"  start-up {len(startup)}/{len(startup)}: {startup[-1]:.3f} s (load server)",
              flush=True)
        time.sleep(args.idle)
        idle_rss = rss_mb(appliance.pid)
        print(f"idle RSS after {args.idle:g} s: {idle_rss:.1f} MB", flush=True)
        baseline = stack.enter_context(running(start_baseline(work)))
        wait_healthy(baseline)
        print(f"load: wrk -t1 -c{CONNECTIONS} -d{args.duration}s, {args.rounds} rounds "
              f"after a {args.warmup} s warm-up each:", flush=True)
        results = measure_load(appliance, baseline, args)
    metrics = summarize(results, startup, idle_rss)
    rows = rows_for(metrics)
    return {
        "run": run_info(args),
        "metrics": metrics,
        "targets": {"ratio_min": TARGET_RATIO, "startup_s_max": TARGET_STARTUP_S,
                    "idle_rss_mb_max": TARGET_RSS_MB},
        "checks": {row.metric: row.ok for row in rows if row.ok is not None},
        "all_ok": all(row.ok for row in rows if row.ok is not None),
        "startup_samples_s": startup,
        "wrk_runs": [asdict(result) for result in results],
        "table": [asdict(row) for row in rows],
    }


# --- command line ------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the appliance's health endpoint, start-up and memory.")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds of each measured wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of wrk warm-up per server, not measured (default 2)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating baseline/appliance rounds (default 3)")
    parser.add_argument("--startup-runs", type=int, default=2,
                        help="extra start-ups timed besides the load server's (default 2)")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds the appliance rests before its RSS is read (default 2)")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "bench-results.json",
                        help="JSON results file (default bench-results.json in the repo)")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when any target is missed")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.rounds < 1 or args.warmup < 0 or args.startup_runs < 0:
        parser.error("--duration and --rounds must be >= 1, --warmup and --startup-runs >= 0")
    return args


def raise_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped and temp dirs removed."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
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
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_table(rows_for(report["metrics"])))
    print(f"\nwall time {report['run']['wall_s']} s; results in {args.output}")
    if args.strict and not report["all_ok"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
