"""Keystroke-to-echo through the web console on Incus, against `incus exec` of the same command.

Part `console` of scripts/bench. A served appliance (its own data directory) with the local
Incus node, a 1 vCPU / 128 MiB plan and one instance of TEST_IMAGE made through the API;
then a console on it (POST .../console), its output stream read on one connection and its
input sent on another kept-alive one, as the dashboard does. Each round, alternating which
goes first: (1) the console: POST `echo bench-<n>-$((1+1))\\r` as input and wait until the
stream has carried the shell's answer `bench-<n>-2` (the command's output, not the echo
of what was typed); (2) Incus's own path: `incus exec NAME -- sh -c 'echo bench-<n>-$((1+1))'`
until it exits with that output. After WARMUP_ROUNDS unmeasured rounds, ROUNDS measured
ones; p50 and p99 of each and the ratios console / incus exec, target p50 <= 2.
Skipped (a miss only under --strict) where Incus or its command does not answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import common

ROUNDS = 60
WARMUP_ROUNDS = 5
TARGET_P50_RATIO = 2.0
TARGETS = {"console_echo_p50_ratio_max": TARGET_P50_RATIO}
ECHO_TIMEOUT_S = 10.0


class Output(threading.Thread):
    """Reads the console's SSE stream; `wait_for(pattern)` waits for output matching it."""

    def __init__(self, port: int, path: str, token: str) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection(common.HOST, port, timeout=60)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                                "Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise common.BenchError(f"GET {path} answered {self.response.status}")
        self.seen = bytearray()
        self.changed = threading.Condition()
        self.start()

    def run(self) -> None:
        data = None
        try:
            while line := self.response.fp.readline():
                text = line.decode().rstrip("\n")
                if text.startswith("event: "):
                    data = text == "event: output"
                elif text.startswith("data: ") and data:
                    chunk = base64.b64decode(json.loads(text[6:])["data"])
                    with self.changed:
                        self.seen += chunk
                        self.changed.notify_all()
        except (OSError, ValueError):
            pass

    def wait_for(self, pattern: bytes, after: int) -> None:
        deadline = time.perf_counter() + ECHO_TIMEOUT_S
        with self.changed:
            while not re.search(pattern, bytes(self.seen[after:])):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise common.BenchError(f"the console did not show {pattern!r}")
                self.changed.wait(left)

    def close(self) -> None:
        self.conn.close()


def _call(port: int, method: str, path: str, token: str, body: dict | None = None, *,
          expect: int = 200) -> Any:
    status, answer = common.call_json(port, method, path, body, token)
    if status != expect:
        raise common.BenchError(f"{method} {path} answered {status}: {answer}")
    return answer


def _prepare(server: common.Server, token: str) -> tuple[str, str, str]:
    """(project id, instance id, engine name) of a running instance on the Incus node."""
    port = server.port
    nodes = _call(port, "GET", "/api/v1/admin/nodes", token)["data"]
    if not any(node["engine"] == "incus" for node in nodes):
        _call(port, "POST", "/api/v1/admin/nodes", token, {
            "name": "incus", "engine": "incus", "endpoint": "", "capacity_vcpus": 8,
            "capacity_memory_mb": 8192, "capacity_disk_gb": 100}, expect=201)
    _call(port, "POST", "/api/v1/admin/plans", token, {
        "slug": "bench-console", "name": "Bench console", **common.PLAN, "price_hourly": 0,
        "price_monthly_cap": 0}, expect=201)
    images = _call(port, "GET", "/api/v1/images", token)["data"]
    image = next((i for i in images if i["engine"] == "incus"
                  and common.TEST_IMAGE in i["ref"]), None)
    if image is None:
        raise common.BenchError(f"the Incus node has no image {common.TEST_IMAGE}")
    project = next(p for p in _call(port, "GET", "/api/v1/projects", token)["data"]
                   if p["is_default"])["id"]
    created = _call(port, "POST", f"/api/v1/projects/{project}/instances", token, {
        "name": f"bench-console-{secrets.token_hex(3)}", "plan_id": "bench-console",
        "image_id": image["id"]}, expect=202)
    path = f"/api/v1/projects/{project}/instances/{created['instance']['id']}"
    deadline = time.perf_counter() + 120
    while True:
        instance = _call(port, "GET", path, token)
        if instance["status"] == "running" and instance["job"] is None:
            break
        if time.perf_counter() > deadline or instance["status"] == "failed":
            raise common.BenchError(f"the instance did not come up: {instance}")
        time.sleep(0.1)
    return project, instance["id"], "ins-" + instance["id"].removeprefix("ins_")


def _start(work: Path) -> common.Server:
    """`python -m appliance serve` of this interpreter (as common.start_appliance, but
    without the `appliance` script, whose interpreter may be another virtualenv's)."""
    run_dir = Path(tempfile.mkdtemp(prefix="console-", dir=work))
    port = common.free_port()
    argv = [sys.executable, "-m", "appliance", "serve", "--host", common.HOST, "--port",
            str(port), "--threads", str(common.THREADS), "--data-dir", str(run_dir / "data")]
    return common.Server("console", argv, port, run_dir / "server.log", run_dir / "data",
                         settings=common.LOADED_SETTINGS)


def _create_admin(server: common.Server, password: str) -> None:
    done = subprocess.run([sys.executable, "-m", "appliance", "create-admin", "--email",
                           common.BENCH_EMAIL, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=common.server_env() | {"APPLIANCE_ADMIN_PASSWORD": password},
                          stdin=subprocess.DEVNULL, cwd=server.log_path.parent)
    if done.returncode != 0:
        raise common.BenchError(f"appliance create-admin failed:\n{done.stdout}{done.stderr}")


def _delete(server: common.Server, token: str, base: str, remove: list[str]) -> None:
    """Delete the instance through the API and wait for its job; on the engine if left."""
    common.call_json(server.port, "DELETE", base, None, token)
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline:
        if common.call_json(server.port, "GET", base, None, token)[0] == 404:
            return
        time.sleep(0.1)
    subprocess.run(remove, capture_output=True, check=False, timeout=60)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def measure(work: Path) -> dict[str, Any]:
    incus = shutil.which("incus")
    if not incus:
        return {"console_skipped": "skipped: the incus command is missing"}
    try:
        subprocess.run([incus, "info"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"console_skipped": f"skipped: Incus does not answer ({exc})"[:120]}
    print("keystroke-to-echo through the web console on Incus vs incus exec:", flush=True)
    with common.running(_start(work)) as server:
        common.wait_healthy(server)
        password = secrets.token_urlsafe(18)
        _create_admin(server, password)
        token = common.sign_in(server, password)
        project, instance_id, name = _prepare(server, token)
        base = f"/api/v1/projects/{project}/instances/{instance_id}"
        try:
            return _rounds(server, token, base, [incus, "exec", name])
        finally:
            _delete(server, token, base, [incus, "delete", "--force", name])


def _rounds(server: common.Server, token: str, base: str, incus_exec: list[str],
            ) -> dict[str, Any]:
    opened = _call(server.port, "POST", base + "/console", token,
                   {"cols": 80, "rows": 24}, expect=201)["console"]
    output = Output(server.port, opened["stream_url"], token)
    typing = http.client.HTTPConnection(common.HOST, server.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    console_s: list[float] = []
    exec_s: list[float] = []

    def through_console(n: int) -> float:
        after = len(output.seen)
        body = json.dumps({"data": base64.b64encode(
            f"echo bench-{n}-$((1+1))\r".encode()).decode()})
        began = time.perf_counter()
        typing.request("POST", opened["input_url"], body, headers)
        response = typing.getresponse()
        response.read()
        if response.status != 204:
            raise common.BenchError(f"typing answered {response.status}")
        output.wait_for(rb"\nbench-%d-2\r" % n, after)
        return time.perf_counter() - began

    def through_exec(n: int) -> float:
        began = time.perf_counter()
        done = subprocess.run([*incus_exec, "--", "sh", "-c",
                               f"echo bench-{n}-$((1+1))"], capture_output=True,
                              timeout=ECHO_TIMEOUT_S, check=False)
        took = time.perf_counter() - began
        if done.stdout.strip() != f"bench-{n}-2".encode():
            raise common.BenchError(f"incus exec answered {done.stdout!r} {done.stderr!r}")
        return took

    try:
        output.wait_for(rb"[#$] ", 0)
        for n in range(WARMUP_ROUNDS + ROUNDS):
            first, second = ((through_console, through_exec) if n % 2
                             else (through_exec, through_console))
            a, b = first(2 * n), second(2 * n + 1)
            if n >= WARMUP_ROUNDS:
                if first is through_console:
                    console_s.append(a)
                    exec_s.append(b)
                else:
                    exec_s.append(a)
                    console_s.append(b)
    finally:
        typing.close()
        common.call_json(server.port, "DELETE", opened["input_url"].removesuffix("/input"),
                         None, token)
        output.close()
    metrics = {
        "console_rounds": ROUNDS,
        "console_echo_p50_s": statistics.median(console_s),
        "console_echo_p99_s": _percentile(console_s, 0.99),
        "console_exec_p50_s": statistics.median(exec_s),
        "console_exec_p99_s": _percentile(exec_s, 0.99),
    }
    metrics["console_echo_p50_ratio"] = (metrics["console_echo_p50_s"]
                                         / metrics["console_exec_p50_s"])
    metrics["console_echo_p99_ratio"] = (metrics["console_echo_p99_s"]
                                         / metrics["console_exec_p99_s"])
    print(f"  console p50 {metrics['console_echo_p50_s'] * 1000:.1f} ms, p99 "
          f"{metrics['console_echo_p99_s'] * 1000:.1f} ms; incus exec p50 "
          f"{metrics['console_exec_p50_s'] * 1000:.1f} ms, p99 "
          f"{metrics['console_exec_p99_s'] * 1000:.1f} ms", flush=True)
    return metrics


def rows(m: dict[str, Any], strict: bool = False) -> list[common.Row]:
    row = common.Row
    metric = "console keystroke-to-echo p50: ratio console / incus exec"
    if "console_skipped" in m:
        return [row(metric, m["console_skipped"][:70], f"<= {TARGET_P50_RATIO}",
                    False if strict else None)]
    if "console_echo_p50_ratio" not in m:
        return []
    return [
        row("console keystroke-to-echo p50 / p99",
            f"{m['console_echo_p50_s'] * 1000:.1f} / {m['console_echo_p99_s'] * 1000:.1f} ms",
            "-", None),
        row("  incus exec of the same command p50 / p99",
            f"{m['console_exec_p50_s'] * 1000:.1f} / {m['console_exec_p99_s'] * 1000:.1f} ms",
            "-", None),
        row(metric, f"{m['console_echo_p50_ratio']:.2f}", f"<= {TARGET_P50_RATIO}",
            m["console_echo_p50_ratio"] <= TARGET_P50_RATIO),
        row("  p99 ratio console / incus exec", f"{m['console_echo_p99_ratio']:.2f}", "-",
            None),
    ]
