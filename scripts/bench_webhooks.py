"""Webhook delivery benchmarks: throughput to one receiver, and isolation from a dead one.

Run with the test virtualenv: `.venv-test/bin/python scripts/bench_webhooks.py [--strict]`.
Each measurement builds a fresh data directory with the real migrations and runs the
real dispatcher (services/dispatcher.py: WORKERS threads, PER_ENDPOINT in flight per
endpoint) in this process, delivering over HTTP to receivers on 127.0.0.1. The SSRF
guard refuses loopback, so for this process only it is told to let 127.0.0.1 through
(as the tests do); everything else is the production path: signing, the pinned
connection, the delivery log, the retry bookkeeping.

* `throughput`: QUEUED (1,000) events queued in one transaction for one webhook, then
  the time until the receiver has them all; deliveries/s (target >= 200).
* `isolation`: two webhooks, one whose endpoint never answers within the timeout and one
  healthy; EVENTS_ISOLATION events each; the healthy endpoint's worst delay from the
  event to its arrival (target < 1 s) while the other one times out.

Prints one JSON object; with --strict exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

QUEUED = 1000
EVENTS_ISOLATION = 20
TARGET_RATE = 200.0
TARGET_DELAY_S = 1.0
SLOW_TIMEOUT_S = 3.0


def _setup(data_dir: str):
    from appliance import create_app
    from appliance.services import ssrf
    from tests.factories import api, bearer, login, make_user

    strict = ssrf._refusal
    ssrf._refusal = (lambda address, allow_private: None if str(address) == "127.0.0.1"
                     else strict(address, allow_private))
    app = create_app({"DATA_DIR": data_dir})
    user = make_user(app, "bench@example.test")
    client = app.test_client()
    auth = bearer(login(client, "bench@example.test"))

    def add_webhook(url: str) -> None:
        response = api(client, "POST", "/webhooks", auth, json={"url": url})
        assert response.status_code == 201, response.get_json()

    return app, user.id, add_webhook


def throughput() -> dict:
    from appliance.db import database
    from appliance.services import dispatcher, events
    from tests.receivers import Receiver

    work = tempfile.mkdtemp(prefix="bench-webhooks-")
    receiver = Receiver()
    try:
        app, user_id, add_webhook = _setup(work)
        add_webhook(receiver.url)
        with app.app_context(), database.atomic():
            for n in range(QUEUED):
                events.emit("billing.credited", user_id=user_id, data={"amount": n})
        running = dispatcher.Dispatcher(app)
        started = time.monotonic()
        running.start()
        while len(receiver.received) < QUEUED and time.monotonic() - started < 120:
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        running.stop()
    finally:
        receiver.close()
        shutil.rmtree(work, ignore_errors=True)
    rate = len(receiver.received) / elapsed
    return {"delivered": len(receiver.received), "seconds": round(elapsed, 2),
            "per_second": round(rate, 1), "target": TARGET_RATE, "met": rate >= TARGET_RATE}


def isolation() -> dict:
    from appliance.services import deliveries, dispatcher, events
    from tests.receivers import Answer, Receiver

    work = tempfile.mkdtemp(prefix="bench-webhooks-")
    slow, healthy = Receiver(Answer(200, delay=SLOW_TIMEOUT_S + 5)), Receiver()
    deliveries.TIMEOUT = SLOW_TIMEOUT_S
    try:
        app, user_id, add_webhook = _setup(work)
        add_webhook(slow.url)
        add_webhook(healthy.url)
        running = dispatcher.Dispatcher(app)
        running.start()
        sent_at = []
        for n in range(EVENTS_ISOLATION):
            sent_at.append(time.monotonic())
            with app.app_context():
                events.emit("billing.credited", user_id=user_id, data={"amount": n})
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while len(healthy.received) < EVENTS_ISOLATION and time.monotonic() < deadline:
            time.sleep(0.01)
        delays = [r.at - sent_at[json.loads(r.body)["data"]["amount"]]
                  for r in healthy.received]
        running.stop()
    finally:
        slow.close()
        healthy.close()
        shutil.rmtree(work, ignore_errors=True)
    worst = max(delays) if delays else float("inf")
    return {"healthy_delivered": len(delays), "slow_requests": len(slow.received),
            "worst_delay_s": round(worst, 3), "target_s": TARGET_DELAY_S,
            "met": len(delays) == EVENTS_ISOLATION and worst < TARGET_DELAY_S}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    results = {"throughput": throughput(), "isolation": isolation()}
    print(json.dumps(results, indent=2))
    return 1 if args.strict and not all(r["met"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
