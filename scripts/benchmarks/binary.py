"""The `binary` part of scripts/bench, and the figures scripts/build-binary prints.

The single binary (scripts/build-binary: PyInstaller --onefile) unpacks the interpreter
and the libraries into a temporary directory at every start, which a virtualenv's
`appliance` does not, so its start-up is what the binary costs:

* start-up ratio (`measure`): `appliance serve` from the test virtualenv and the binary
  serve, each on a fresh data directory (every migration runs, the secrets are made),
  alternately for `rounds` rounds; each time from spawning the process to the first 200
  from GET /api/v1/health, polled every 10 ms. Reported: the two medians and binary /
  virtualenv, target at most TARGET_STARTUP_RATIO (1.5). `appliance version` is timed
  the same way (its median), with no target: it shows the unpacking alone.
* When the binary is missing or older than the sources, scripts/build-binary builds it
  first (about a minute; it installs into ./.venv-build). When that cannot be done, the
  part reports "skipped" with the reason instead of a number.

`python -m benchmarks.binary --report dist/appliance-...` (what scripts/build-binary
runs) prints the binary's size, the median of three `version` runs and of three serve
start-ups.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

TARGET_STARTUP_RATIO = 1.5
BUILD_TIMEOUT_S = 1200
TARGETS = {"binary_startup_ratio_max": TARGET_STARTUP_RATIO}


def binary_path() -> Path:
    """dist/appliance-<version>-linux-<arch>, the name scripts/build-binary gives it."""
    source = (common.REPO_ROOT / "appliance" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', source, re.MULTILINE)
    if match is None:
        raise common.BenchError("no __version__ in appliance/__init__.py")
    return (common.REPO_ROOT / "dist"
            / f"appliance-{match.group(1)}-linux-{platform.machine()}")


def ensure_binary() -> tuple[Path | None, str]:
    """The binary, built (or rebuilt when the sources are newer) by scripts/build-binary;
    (None, why) when it cannot be built."""
    script = common.REPO_ROOT / "scripts" / "build-binary"
    try:
        done = subprocess.run([str(script), "--no-report"], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, check=False, cwd=common.REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"skipped: scripts/build-binary did not run: {exc}"
    binary = binary_path()
    if done.returncode != 0 or not binary.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, (f"skipped: scripts/build-binary failed with status {done.returncode}: "
                      f"{tail[0]}")
    return binary, ""


def time_version(argv: list[str]) -> float:
    """Seconds `argv version` takes, start to exit."""
    began = time.perf_counter()
    done = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=60,
                          env=common.server_env(), check=False, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise common.BenchError(f"{argv[0]} version failed: {done.stderr.strip()}")
    return seconds


def time_serve(argv: list[str], work: Path, name: str) -> float:
    """Seconds from spawning `argv serve` on a fresh data directory to its first healthy
    answer."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
    port = common.free_port()
    server = common.Server(name, [*argv, "serve", "--host", common.HOST, "--port", str(port),
                                  "--threads", str(common.THREADS),
                                  "--data-dir", str(run_dir / "data")],
                           port, run_dir / "server.log", run_dir / "data")
    with common.running(server):
        return common.wait_healthy(server)


def measure(work: Path, rounds: int) -> dict[str, Any]:
    """The binary's start-up against the virtualenv's, alternately (or why skipped)."""
    binary, reason = ensure_binary()
    if binary is None:
        print(f"binary start-up: {reason}", flush=True)
        return {"binary_skipped": reason}
    venv, frozen = [common.appliance_bin()], [str(binary)]
    print(f"binary start-up: {binary.name} against {venv[0]}, {rounds} rounds:", flush=True)
    samples: dict[str, list[float]] = {"venv": [], "binary": [], "venv_version": [],
                                       "binary_version": []}
    for index in range(rounds):
        for name, argv in (("venv", venv), ("binary", frozen)):
            samples[name].append(time_serve(argv, work, f"{name}{index}"))
            samples[f"{name}_version"].append(time_version(argv))
        print(f"  round {index + 1}: serve {samples['venv'][-1]:.3f} s (virtualenv), "
              f"{samples['binary'][-1]:.3f} s (binary)", flush=True)
    metrics = {f"binary_{name}_s": statistics.median(values)
               for name, values in samples.items()}
    metrics["binary_startup_ratio"] = metrics["binary_binary_s"] / metrics["binary_venv_s"]
    metrics["binary_size_mb"] = binary.stat().st_size / 2**20
    return metrics


def rows(m: dict[str, Any], strict: bool = False) -> list[common.Row]:
    row = common.Row
    if "binary_skipped" in m:
        return [row("binary start-up / virtualenv", m["binary_skipped"][:70],
                    f"<= {TARGET_STARTUP_RATIO}", False if strict else None)]
    if "binary_startup_ratio" not in m:
        return []
    return [
        row("binary size", f"{m['binary_size_mb']:.1f} MB", "-", None),
        row("start-up to first 200: virtualenv / binary",
            f"{m['binary_venv_s']:.3f} / {m['binary_binary_s']:.3f} s", "-", None),
        row("binary start-up / virtualenv", f"{m['binary_startup_ratio']:.2f}",
            f"<= {TARGET_STARTUP_RATIO}", m["binary_startup_ratio"] <= TARGET_STARTUP_RATIO),
        row("`version`: virtualenv / binary",
            f"{m['binary_venv_version_s']:.3f} / {m['binary_binary_version_s']:.3f} s", "-",
            None),
    ]


def report(binary: Path, runs: int = 3) -> None:
    """What scripts/build-binary prints after a build: size and start-up times."""
    argv = [str(binary.resolve())]
    versions = [time_version(argv) for _ in range(runs)]
    with tempfile.TemporaryDirectory(prefix="appliance-binary-") as work:
        serves = [time_serve(argv, Path(work), f"serve{index}") for index in range(runs)]
    print(f"{binary.name}: {binary.stat().st_size / 2**20:.1f} MB; `version` "
          f"{statistics.median(versions):.2f} s, `serve` to the first 200 from "
          f"{common.HEALTH_PATH} {statistics.median(serves):.2f} s (medians of {runs}, fresh "
          "data directories)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.binary")
    parser.add_argument("--report", type=Path, required=True, metavar="BINARY")
    args = parser.parse_args()
    try:
        report(args.report)
    except common.BenchError as exc:
        print(f"benchmarks.binary: {exc}", file=sys.stderr)
        sys.exit(2)
