"""The webhook dispatcher of the serving process: a coordinator thread and a bounded pool.

The coordinator claims due deliveries in batches, one webhook's per batch
(services/webhooks/batches.py), and hands each batch to a worker of a small pool (WORKERS
threads) that sends them one at a time, never more than PER_ENDPOINT batches at a time to
one webhook; a batch ends at its first failure, so a slow or dead endpoint holds at most
PER_ENDPOINT workers for about the 15-second timeout while the others keep delivering.
It sleeps until the next delivery comes due (at most SWEEP seconds) or until it is woken:
by `webhooks.wake()` when events are queued (it then looks again every few milliseconds
for a moment, because the transaction that queued them may not have committed yet), and
when a worker finishes.

At start-up deliveries left claimed by a previous process (a crash, `kill -9`) are due
again at once. `scheduler.start` starts the dispatcher and `scheduler.stop` stops it;
tests call `batches.deliver_due()` instead, or run a Dispatcher of their own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from appliance.db import database
from appliance.services import clock
from appliance.services.webhooks import batches, deliveries, endpoints

log = logging.getLogger("appliance.webhooks")

WORKERS = 8
PER_ENDPOINT = 2
SWEEP = 5.0  # the longest the coordinator sleeps
HURRY = 1.0  # after a wake-up, look this long ...
HURRY_POLL = 0.02  # ... this often


class Dispatcher:
    def __init__(self, app: Any, workers: int = WORKERS, per_endpoint: int = PER_ENDPOINT):
        self.app = app
        self.workers = workers
        self.per_endpoint = per_endpoint
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._free = workers
        self._in_flight: dict[str, int] = defaultdict(int)
        self._wakeup = threading.Event()
        self._hurry_until = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="webhook-dispatcher",
                                        daemon=True)

    def wake(self) -> None:
        self._hurry_until = time.monotonic() + HURRY
        self._wakeup.set()

    def start(self) -> None:
        with self.app.app_context(), database.connection_context():
            recovered = deliveries.recover_interrupted()
        if recovered:
            log.warning("resuming %s webhook delivery(ies) interrupted by the last shutdown",
                        recovered)
        endpoints.add_waker(self.wake)
        self._thread.start()

    def stop(self, timeout: float = 20.0) -> None:
        endpoints.remove_waker(self.wake)
        self._stopping = True
        self._wakeup.set()
        self._thread.join(timeout)
        self.pool.shutdown(wait=True, cancel_futures=True)

    # The coordinator ---------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            try:
                with self.app.app_context(), database.connection_context():
                    self._dispatch()
                    wait = self._wait_seconds()
            except Exception:
                log.exception("the webhook dispatcher failed; trying again")
                wait = SWEEP
            self._wakeup.wait(wait)
            self._wakeup.clear()

    def _dispatch(self) -> None:
        """Hand out batches of due deliveries (batches.claim_batch) while workers are
        free: one batch per worker, never more than `per_endpoint` to one webhook."""
        while not self._stopping:
            with self._lock:
                free = self._free
                busy = [w for w, n in self._in_flight.items() if n >= self.per_endpoint]
            if free <= 0:
                return
            handed = 0
            for webhook_id in batches.due_webhooks(limit=free, exclude_webhooks=busy):
                batch = batches.claim_batch(webhook_id)
                if batch is None:
                    continue
                with self._lock:
                    self._free -= 1
                    self._in_flight[webhook_id] += 1
                self.pool.submit(self._run, batch)
                handed += 1
            if not handed:
                return

    def _wait_seconds(self) -> float:
        if time.monotonic() < self._hurry_until:
            return HURRY_POLL
        with self._lock:
            if self._free <= 0:
                return SWEEP  # a finishing worker wakes the coordinator
            busy = [w for w, n in self._in_flight.items() if n >= self.per_endpoint]
        due_at = deliveries.next_due_at(exclude_webhooks=busy)
        if due_at is None:
            return SWEEP
        return min(max((due_at - clock.now()).total_seconds(), HURRY_POLL), SWEEP)

    # The workers -------------------------------------------------------------------

    def _run(self, batch: batches.Batch) -> None:
        try:
            with self.app.app_context(), database.connection_context():
                batches.send_batch(batch, keep_going=lambda: not self._stopping)
        except Exception:
            log.exception("webhook deliveries to %s failed to run", batch.webhook_id)
        finally:
            with self._lock:
                self._free += 1
                self._in_flight[batch.webhook_id] -= 1
                if self._in_flight[batch.webhook_id] <= 0:
                    del self._in_flight[batch.webhook_id]
            self._wakeup.set()


def sweep() -> int:
    """The scheduler's periodic pass: forget previous secrets whose grace is over, and
    wake the dispatcher (a safety net; it wakes itself when deliveries come due)."""
    forgotten = endpoints.forget_expired_secrets()
    endpoints.wake()
    return forgotten
