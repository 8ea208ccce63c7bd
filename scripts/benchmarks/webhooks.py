"""Webhook benchmarks for scripts/bench: delivery throughput and head-of-line blocking.

Both run against a real `appliance serve` (its own dispatcher and worker pool) with an
account made by `appliance create-admin` and webhooks made over the API; the receivers
are asyncio HTTP servers in the harness, recording the arrival time of every request.

Where the receivers listen: the SSRF guard refuses loopback always (there is no setting
for it, by design), so the receivers bind to an address of this machine in a private
range (a Docker or Incus bridge, a LAN address) and the server runs with
APPLIANCE_WEBHOOKS_ALLOW_PRIVATE=true, the operator's documented setting. The address
chosen is the first one `ssrf.check_url(..., allow_private=True)` accepts; a machine
without one skips both measurements (the reason is printed) rather than weakening the
guard. Traffic to a local address never leaves the machine.

* Deliveries per second (`measure_throughput`): one webhook subscribed to
  `api_key.created`, pointing to a receiver that answers 204 at once. A child
  interpreter calls `events.emit` (the outbox: the event row and its delivery queued in
  one transaction, as every service does) QUEUED_EVENTS (1,000) times in one
  transaction against the served database; right after its commit the harness calls
  POST /webhooks/{id}/resume, which wakes the dispatcher as any in-process emit does (a
  child cannot wake it; otherwise it would find them at its next sweep, within 5 s).
  deliveries/s = QUEUED_EVENTS / (last arrival - commit); every event must arrive once
  and the database must then count QUEUED_EVENTS succeeded deliveries. Target at least
  TARGET_DELIVERIES_PER_S (200).

* Delay added by a dead endpoint (`measure_isolation`): two webhooks of the same account,
  subscribed to `api_key.created`: a healthy receiver (204 at once) and a dead one that
  reads the request and never answers (the appliance gives up after its 15 s timeout).
  Events come from the real action: POST /api-keys with the account's session token
  (each followed by DELETE, so the key quota never runs out) every EMIT_INTERVAL_S for
  ISOLATION_SECONDS (longer than the timeout, so attempts time out and are retried
  meanwhile). The healthy endpoint's latency is from the POST's answer (the event is
  committed by then) to its arrival there, matched by the key id in the body. The run
  is made twice: with the dead webhook paused (the baseline: nothing is queued for it)
  and active. Added delay = p99 with the dead endpoint - p99 without; target under
  TARGET_ADDED_DELAY_S (1 s). Every event must reach the healthy receiver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import common

QUEUED_EVENTS = 1_000
TARGET_DELIVERIES_PER_S = 200.0
ISOLATION_SECONDS = 18.0
EMIT_INTERVAL_S = 0.1
TARGET_ADDED_DELAY_S = 1.0
DELIVERY_TIMEOUT_S = 60.0
EVENT_TYPE = "api_key.created"
WEBHOOKS_SETTINGS = {**common.LOADED_SETTINGS, "APPLIANCE_WEBHOOKS_ALLOW_PRIVATE": "true"}

EMIT_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import webhooks; "
             "webhooks.emit_in_child(*sys.argv[2:])")


# --- receivers ---------------------------------------------------------------------------


class Receivers:
    """An asyncio HTTP server on `host` in a thread of its own: POST /ok answers 204 at
    once, POST /dead reads the request and never answers. Records (path, arrival
    time.time(), body) of every request."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.received: list[tuple[str, float, bytes]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="receivers")
        self._thread.start()
        if not self._ready.wait(10):
            raise common.BenchError("the webhook receivers did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, self.host, 0, backlog=512))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length)
            with self._lock:
                self.received.append((path, time.time(), body))
            if path == "/dead":
                await reader.read()  # until the appliance gives up and closes
                return
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def arrivals(self, path: str) -> list[tuple[float, bytes]]:
        with self._lock:
            return [(at, body) for p, at, body in self.received if p == path]

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def private_address() -> tuple[str | None, str]:
    """An address of this machine the SSRF guard accepts with WEBHOOKS_ALLOW_PRIVATE, and
    why none when there is none."""
    from appliance.services.webhooks import ssrf

    ip = shutil.which("ip")
    if ip is None:
        return None, "skipped: `ip` (iproute2) is missing, so no local address was found"
    done = subprocess.run([ip, "-o", "-4", "addr", "show"], capture_output=True,
                          text=True, check=False, timeout=10)
    for line in done.stdout.splitlines():
        fields = line.split()
        if "inet" not in fields:
            continue
        address = fields[fields.index("inet") + 1].split("/")[0]
        if not ipaddress.ip_address(address).is_private:
            continue
        try:
            ssrf.check_url(f"http://{address}:9/", allow_private=True)
        except ssrf.UnsafeURL:
            continue
        return address, ""
    return None, ("skipped: no private-range address on this machine; the SSRF guard "
                  "refuses loopback and has no setting for it")


# --- the served appliance ----------------------------------------------------------------


@contextlib.contextmanager
def served(work: Path, name: str) -> Iterator[tuple[common.Server, str]]:
    """`appliance serve` with WEBHOOKS_SETTINGS and a signed-in account: (server, token)."""
    with common.running(common.start_appliance(work, name, WEBHOOKS_SETTINGS)) as server:
        common.wait_healthy(server)
        password = secrets.token_urlsafe(18)
        common.create_account(server, password)
        yield server, common.sign_in(server, password)


def create_webhook(server: common.Server, token: str, url: str) -> str:
    status, body = common.call_json(server.port, "POST", "/api/v1/webhooks",
                                    {"url": url, "event_types": [EVENT_TYPE]}, token)
    if status != 201 or not isinstance(body, dict):
        raise common.BenchError(f"POST /webhooks answered {status}: {body}")
    return body["webhook"]["id"]


def webhook_action(server: common.Server, token: str, webhook_id: str, action: str) -> None:
    status, body = common.call_json(server.port, "POST",
                                    f"/api/v1/webhooks/{webhook_id}/{action}", {}, token)
    if status != 200:
        raise common.BenchError(f"POST /webhooks/{webhook_id}/{action} answered {status}: "
                                f"{body}")


def wait_for(receivers: Receivers, path: str, count: int, timeout: float = DELIVERY_TIMEOUT_S,
             ) -> list[tuple[float, bytes]]:
    deadline = time.monotonic() + timeout
    while True:
        found = receivers.arrivals(path)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


# --- deliveries per second -----------------------------------------------------------------


def emit_in_child(data_dir: str, user_email: str, count: str, result_path: str) -> None:
    """Emit `count` api_key.created events of the account `user_email` in one transaction
    (each queues its deliveries); write the commit's time.time() to `result_path`."""
    from appliance import create_app
    from appliance.db import database
    from appliance.models import User
    from appliance.services.events import outbox
    from appliance.services.ids import new_id

    app = create_app({"DATA_DIR": data_dir})
    with app.app_context(), database.connection_context():
        user = User.get(User.email == user_email)
        with database.atomic():
            for n in range(int(count)):
                outbox.emit(EVENT_TYPE, user_id=user.id, data={"api_key": {
                    "id": new_id("key"), "name": f"bench {n}", "scopes": ["instances:read"],
                    "project_id": None, "expires_at": None, "owner_id": user.id},
                    "actor_id": user.id})
        committed = time.time()
    Path(result_path).write_text(json.dumps({"committed": committed}))


def succeeded(server: common.Server) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(server.data_dir / "appliance.db",
                                            timeout=30)) as conn:
        return conn.execute("SELECT COUNT(*) FROM webhook_delivery "
                            "WHERE status = 'succeeded'").fetchone()[0]


def measure_throughput(work: Path, host: str) -> dict[str, Any]:
    receivers = Receivers(host)
    try:
        with served(work, "webhooks-rate") as (server, token):
            webhook_id = create_webhook(server, token, receivers.url("/ok"))
            result = Path(tempfile.mkstemp(prefix="emit-", suffix=".json", dir=work)[1])
            argv = [sys.executable, "-c", EMIT_CODE, str(common.SCRIPTS_DIR),
                    str(server.data_dir), common.BENCH_EMAIL, str(QUEUED_EVENTS), str(result)]
            done = subprocess.run(argv, capture_output=True, text=True, check=False,
                                  env=common.server_env(), timeout=120,
                                  stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise common.BenchError(f"emitting the events failed:\n{done.stderr}")
            webhook_action(server, token, webhook_id, "resume")  # wakes the dispatcher
            committed = json.loads(result.read_text())["committed"]
            arrivals = wait_for(receivers, "/ok", QUEUED_EVENTS)
            time.sleep(0.5)  # let the last outcomes be written
            ok_count = succeeded(server)
    finally:
        receivers.close()
    ids = {json.loads(body)["data"]["api_key"]["id"] for _, body in arrivals}
    last = max((at for at, _ in arrivals), default=committed)
    seconds = last - committed
    rate = len(arrivals) / seconds if seconds > 0 else 0.0
    print(f"  {len(arrivals)} of {QUEUED_EVENTS} delivered in {seconds:.2f} s after the "
          f"commit: {rate:.0f}/s; {ok_count} succeeded in the database", flush=True)
    return {"webhooks_queued": QUEUED_EVENTS, "webhooks_received": len(arrivals),
            "webhooks_distinct": len(ids), "webhooks_succeeded": ok_count,
            "webhooks_seconds": seconds, "webhooks_per_s": rate}


# --- a dead endpoint beside a healthy one ---------------------------------------------------


def emit_events(server: common.Server, token: str, seconds: float) -> dict[str, float]:
    """POST /api-keys (then DELETE it) every EMIT_INTERVAL_S; {key id: time.time() when
    the POST answered}."""
    api = common.ApiClient(server.port, "")
    api.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent: dict[str, float] = {}
    try:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            began = time.monotonic()
            status, body = api.call("POST", "/api/v1/api-keys",
                                    {"name": f"bench {n}", "scopes": ["instances:read"]})
            answered = time.time()
            if status != 201:
                raise common.BenchError(f"POST /api-keys answered {status}: {body}")
            key_id = body["key"]["id"] if "key" in body else body["id"]
            sent[key_id] = answered
            api.call("DELETE", f"/api/v1/api-keys/{key_id}")
            n += 1
            time.sleep(max(0.0, EMIT_INTERVAL_S - (time.monotonic() - began)))
    finally:
        api.close()
    return sent


def latencies(receivers: Receivers, sent: dict[str, float]) -> list[float]:
    """Seconds from each event's POST answer to its first arrival at /ok (waiting up to
    DELIVERY_TIMEOUT_S for all of them); events that never arrived are left out."""
    first: dict[str, float] = {}
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while len(first) < len(sent) and time.monotonic() < deadline:
        for at, body in receivers.arrivals("/ok"):
            key_id = json.loads(body)["data"]["api_key"]["id"]
            if key_id in sent:
                first.setdefault(key_id, at)
        time.sleep(0.05)
    return [first[key] - sent[key] for key in sent if key in first]


def _summary(samples: list[float], prefix: str) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0
    return {f"{prefix}_p50_s": statistics.median(ordered) if ordered else 0.0,
            f"{prefix}_p99_s": p99, f"{prefix}_max_s": ordered[-1] if ordered else 0.0}


def measure_isolation(work: Path, host: str, seconds: float = ISOLATION_SECONDS,
                      ) -> dict[str, Any]:
    receivers = Receivers(host)
    try:
        with served(work, "webhooks-dead") as (server, token):
            create_webhook(server, token, receivers.url("/ok"))
            dead_id = create_webhook(server, token, receivers.url("/dead"))
            webhook_action(server, token, dead_id, "pause")
            alone_sent = emit_events(server, token, seconds)
            alone = latencies(receivers, alone_sent)
            webhook_action(server, token, dead_id, "resume")
            beside_sent = emit_events(server, token, seconds)
            beside = latencies(receivers, beside_sent)
            dead_requests = len(receivers.arrivals("/dead"))
    finally:
        receivers.close()
    metrics: dict[str, Any] = {
        "isolation_events": len(alone_sent) + len(beside_sent),
        "isolation_missing": (len(alone_sent) - len(alone)) + (len(beside_sent) - len(beside)),
        "isolation_dead_requests": dead_requests,
        **_summary(alone, "isolation_alone"), **_summary(beside, "isolation_beside")}
    metrics["isolation_added_s"] = (metrics["isolation_beside_p99_s"]
                                    - metrics["isolation_alone_p99_s"])
    print(f"  healthy endpoint alone: p50 {metrics['isolation_alone_p50_s'] * 1000:.0f} ms, "
          f"p99 {metrics['isolation_alone_p99_s'] * 1000:.0f} ms; beside a dead one "
          f"({dead_requests} requests hung there): p50 "
          f"{metrics['isolation_beside_p50_s'] * 1000:.0f} ms, p99 "
          f"{metrics['isolation_beside_p99_s'] * 1000:.0f} ms", flush=True)
    return metrics


# --- both, and their rows ------------------------------------------------------------------


def measure(work: Path, parts: tuple[str, ...] = ("rate", "isolation"),
            isolation_seconds: float = ISOLATION_SECONDS) -> dict[str, Any]:
    """The webhook metrics (`webhooks_*`, `isolation_*`) of `parts`, or why skipped."""
    host, reason = private_address()
    if host is None:
        return {"webhooks_skipped": reason}
    metrics: dict[str, Any] = {"webhooks_receiver_host": host}
    if "rate" in parts:
        print(f"webhook deliveries/s: {QUEUED_EVENTS} queued events, receiver on {host}:",
              flush=True)
        metrics.update(measure_throughput(work, host))
    if "isolation" in parts:
        print(f"webhook isolation: an event every {EMIT_INTERVAL_S:g} s for "
              f"{isolation_seconds:g} s, without and then beside a dead endpoint:", flush=True)
        metrics.update(measure_isolation(work, host, isolation_seconds))
    return metrics


def rows(m: dict[str, Any], strict: bool = False) -> list[Any]:
    row = common.Row
    if "webhooks_skipped" in m:
        return [row("webhook deliveries/s and isolation", m["webhooks_skipped"][:70],
                    f">= {TARGET_DELIVERIES_PER_S:g}/s", None if not strict else False)]
    out = []
    if "webhooks_per_s" in m:
        complete = (m["webhooks_received"] == m["webhooks_distinct"] == QUEUED_EVENTS
                    and m["webhooks_succeeded"] == QUEUED_EVENTS)
        out.append(row(f"webhook deliveries/s, {QUEUED_EVENTS} queued",
                       f"{m['webhooks_per_s']:.0f} ({m['webhooks_seconds']:.2f} s)",
                       f">= {TARGET_DELIVERIES_PER_S:g}",
                       complete and m["webhooks_per_s"] >= TARGET_DELIVERIES_PER_S))
        out.append(row("webhook deliveries received / succeeded",
                       f"{m['webhooks_distinct']} / {m['webhooks_succeeded']}",
                       f"{QUEUED_EVENTS} / {QUEUED_EVENTS}", complete))
    if "isolation_added_s" in m:
        out.append(row("healthy webhook p50 / p99, alone",
                       f"{m['isolation_alone_p50_s'] * 1000:.0f} / "
                       f"{m['isolation_alone_p99_s'] * 1000:.0f} ms", "-", None))
        out.append(row("healthy webhook p50 / p99, beside a dead one",
                       f"{m['isolation_beside_p50_s'] * 1000:.0f} / "
                       f"{m['isolation_beside_p99_s'] * 1000:.0f} ms", "-", None))
        out.append(row("delay added by a dead endpoint (p99)",
                       f"{m['isolation_added_s'] * 1000:.0f} ms, "
                       f"{m['isolation_missing']} missing",
                       f"< {TARGET_ADDED_DELAY_S:g} s",
                       m["isolation_added_s"] < TARGET_ADDED_DELAY_S
                       and m["isolation_missing"] == 0))
    return out


TARGETS = {"webhook_deliveries_per_s_min": TARGET_DELIVERIES_PER_S,
           "webhook_added_delay_s_max": TARGET_ADDED_DELAY_S}
