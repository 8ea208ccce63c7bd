"""wrk, the load generator of scripts/bench: what it loads (`Endpoint`), running it, and
reading its `--latency` report into a `WrkResult`.

wrk runs with one thread and CONNECTIONS connections against a server on HOST; a run
that wrk fails, or whose report cannot be read, raises BenchError.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from benchmarks.common import CONNECTIONS, HEALTH_PATH, HOST, BenchError, Server

# wrk script for GET instances: counts the answers that are not 200 (wrk itself counts only
# statuses >= 400) and prints the count in its report.
NON_200_LUA = """\
-- scripts/bench: count every answer that is not 200.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) not200 = 0 end
function response(status, headers, body)
  if status ~= 200 then not200 = not200 + 1 end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("not200") end
  io.write(string.format("Non-200 responses: %d\\n", total))
end
"""

_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_NON_200_RE = re.compile(r"^Non-200 responses: (\d+)", re.MULTILINE)
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class Endpoint:
    """What wrk loads: a name (the prefix of its metrics), a path and extra wrk options."""

    name: str
    path: str
    wrk_options: tuple[str, ...] = ()
    label: str = ""  # printed per round; default: the path without /api/v1


HEALTH = Endpoint("health", HEALTH_PATH)


@dataclass
class WrkResult:
    server: str
    endpoint: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int  # wrk's count: statuses >= 400
    socket_errors: int
    non_200: int = 0  # counted by NON_200_LUA where the endpoint uses it


def to_ms(value: str, unit: str) -> float:
    return float(value) * _TIME_UNITS[unit] * 1000


def parse_wrk(output: str, server: str, endpoint: str, round_no: int) -> WrkResult:
    """Requests/s, p50, p99 and error counts from wrk's `--latency` report."""
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    latencies = {match[1]: to_ms(match[2], match[3]) for match in _LATENCY_RE.finditer(output)}
    if not rps or not requests or set(latencies) != {"50", "99"}:
        raise BenchError(f"cannot parse wrk's output:\n{output}")
    non_2xx = _NON_2XX_RE.search(output)
    non_200 = _NON_200_RE.search(output)
    errors = _SOCKET_ERRORS_RE.search(output)
    return WrkResult(
        server=server, endpoint=endpoint, round=round_no, requests_per_s=float(rps[1]),
        p50_ms=latencies["50"], p99_ms=latencies["99"], requests=int(requests[1]),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        non_200=int(non_200[1]) if non_200 else 0,
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0)


def wrk_bin() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is missing; run this through scripts/bench, which installs it")
    return found


def run_wrk(port: int, duration_s: int, endpoint: Endpoint = HEALTH) -> str:
    """Load `endpoint` (GET /api/v1/health) for `duration_s` seconds; return wrk's report."""
    argv = [wrk_bin(), "-t1", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--latency",
            *endpoint.wrk_options, f"http://{HOST}:{port}{endpoint.path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    return done.stdout


def load(server: Server, duration_s: int, round_no: int, endpoint: Endpoint = HEALTH,
         ) -> WrkResult:
    """One measured run of `endpoint` on `server`, printed as round `round_no` (with a
    warning when it had error answers)."""
    output = run_wrk(server.port, duration_s, endpoint)
    result = parse_wrk(output, server.name, endpoint.name, round_no)
    label = (server.name if endpoint is HEALTH
             else endpoint.label or endpoint.path.removeprefix("/api/v1"))
    print(f"  round {round_no} {label:16} {result.requests_per_s:9.1f} req/s  "
          f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms", flush=True)
    if result.non_2xx or result.socket_errors or result.non_200:
        print(f"    warning: {result.non_2xx} non-2xx, {result.non_200} non-200 responses, "
              f"{result.socket_errors} socket errors", flush=True)
    return result
