"""Durable asynchronous jobs: rows claimed with a conditional UPDATE and a lease.

A service enqueues a job in the same transaction as the change that needs it, then
calls `wake()` after the commit; the runner (started by the scheduler in the serving
process) runs it on a worker thread at once. A job is claimed by one UPDATE that only
succeeds while it is queued and due - or running with an expired lease, which is how
jobs interrupted by a crash or `kill -9` are picked up again after a restart. Handlers
are therefore written to be re-run safely (they look at the engine before acting).

A transient `DriverError` re-queues the job with a growing delay (up to MAX_ATTEMPTS); a
permanent one, a domain error or a bug fails it, and the handler's `on_failure` puts
its resource into a consistent state.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from peewee import fn

from appliance import db
from appliance.db import database
from appliance.drivers.base import DriverError
from appliance.errors import ApplianceError
from appliance.models import Job
from appliance.services import clock
from appliance.services.events import outbox
from appliance.services.ids import new_id

log = logging.getLogger("appliance.jobs")

LEASE = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 3
RETRY_BASE = dt.timedelta(seconds=5)
UNFINISHED = ("queued", "running")


@dataclass(frozen=True)
class Handler:
    run: Callable[[Job, Progress], None]
    on_failure: Callable[[Job, str], None] | None = None


_handlers: dict[str, Handler] = {}
_waker: list[Callable[[], None]] = []


def register(job_type: str, run: Callable[[Job, Progress], None],
             on_failure: Callable[[Job, str], None] | None = None) -> None:
    _handlers[job_type] = Handler(run, on_failure)


class Progress:
    """What a handler reports as it goes; each report also renews the job's lease."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def __call__(self, step: int, message: str) -> None:
        with database.atomic():
            Job.update(step=step, message=message[:300], lease_until=clock.now() + LEASE).where(
                Job.id == self.job.id).execute()
        self.job.step, self.job.message = step, message


@dataclass(frozen=True)
class Figures:
    """How far a job is, as the API and the dashboard show it."""
    step: int
    total: int
    percent: int


def progress_of(job: Job) -> Figures:
    """The job's step of its total and the percentage; a succeeded job is at 100 %."""
    total = max(1, job.total_steps)
    done = job.status == "succeeded"
    step = total if done else min(job.step, total)
    return Figures(step, total, 100 if done else int(100 * step / total))


def percent_done(job: Job) -> int:
    return progress_of(job).percent


def enqueue(job_type: str, *, project_id: str, instance_id: str | None = None,
            user_id: str | None = None, params: dict[str, Any] | None = None,
            total_steps: int = 1, message: str = "Waiting to start") -> Job:
    """Insert a queued job. Call inside the transaction of the change; `wake()` after it."""
    return Job.create(id=new_id("job"), type=job_type, project=project_id,
                      instance=instance_id, user=user_id, status="queued",
                      params=json.dumps(params or {}), total_steps=total_steps,
                      message=message, created_at=clock.now())


def wake() -> None:
    """Tell the runner there is work (no-op when no runner runs, e.g. in tests)."""
    for waker in _waker:
        waker()


def _claim(job_id: str) -> bool:
    now = clock.now()
    due = ((Job.status == "queued") & (Job.run_after.is_null() | (Job.run_after <= now))) | (
        (Job.status == "running") & (Job.lease_until < now))
    with database.atomic():
        claimed = (Job.update(status="running", lease_until=now + LEASE,
                              attempts=Job.attempts + 1,
                              started_at=fn.COALESCE(Job.started_at, now))
                   .where(Job.id == job_id, due).execute())
    return claimed == 1


def any_running() -> bool:
    """Whether a job is running (in any process) now."""
    return Job.select().where(Job.status == "running",
                              Job.lease_until >= clock.now()).exists()


def recover_interrupted() -> int:
    """Start-up: jobs left "running" by a previous process (a crash, `kill -9`) are due
    again at once instead of when their lease would have run out. On SQLite one process
    runs jobs, so at start-up none of them is really running; on PostgreSQL another
    process may be running them, and their leases are left to run out."""
    if not db.is_sqlite():
        return 0
    with database.atomic():
        return Job.update(lease_until=clock.now() - dt.timedelta(seconds=1)).where(
            Job.status == "running").execute()


def due_jobs(limit: int = 20) -> list[str]:
    now = clock.now()
    query = (Job.select(Job.id)
             .where(((Job.status == "queued") & (Job.run_after.is_null()
                                                  | (Job.run_after <= now)))
                    | ((Job.status == "running") & (Job.lease_until < now)))
             .order_by(Job.created_at).limit(limit))
    return [row.id for row in query]


def run_pending(max_jobs: int | None = None) -> int:
    """Claim and run due jobs in this thread until none is left; return how many ran."""
    ran = 0
    while max_jobs is None or ran < max_jobs:
        ids = due_jobs()
        if not ids:
            return ran
        progressed = False
        for job_id in ids:
            if _claim(job_id):
                run(Job.get_by_id(job_id))
                ran += 1
                progressed = True
                if max_jobs is not None and ran >= max_jobs:
                    return ran
        if not progressed:
            return ran
    return ran


def run(job: Job) -> None:
    """Run one claimed job to success, a retry, or failure."""
    handler = _handlers.get(job.type)
    if handler is None:
        _fail(job, None, f"no handler for {job.type}", "internal_error")
        return
    try:
        handler.run(job, Progress(job))
    except DriverError as exc:
        if not exc.permanent and job.attempts < MAX_ATTEMPTS:
            delay = RETRY_BASE * 2 ** (job.attempts - 1)
            log.warning("job %s (%s) attempt %s failed, retrying in %s: %s", job.id, job.type,
                        job.attempts, delay, exc.message)
            with database.atomic():
                Job.update(status="queued", run_after=clock.now() + delay, lease_until=None,
                           message=f"Retrying: {exc.message}"[:300]).where(
                    Job.id == job.id).execute()
            return
        _fail(job, handler, exc.message, "engine_error")
    except ApplianceError as exc:
        _fail(job, handler, exc.message, exc.code)
    except Exception:
        log.exception("job %s (%s) crashed", job.id, job.type)
        _fail(job, handler, "An internal error stopped this job; the log has the details.",
              "internal_error")
    else:
        with database.atomic():
            Job.update(status="succeeded", finished_at=clock.now(), lease_until=None,
                       step=job.total_steps, message="Done").where(Job.id == job.id).execute()
            outbox.job_finished(job.id)


def _fail(job: Job, handler: Handler | None, message: str, code: str) -> None:
    with database.atomic():
        Job.update(status="failed", finished_at=clock.now(), lease_until=None,
                   error=message, error_code=code, message="Failed").where(
            Job.id == job.id).execute()
        outbox.job_finished(job.id)
    if handler is not None and handler.on_failure is not None:
        try:
            handler.on_failure(job, message)
        except Exception:
            log.exception("job %s (%s): on_failure crashed", job.id, job.type)


class Runner:
    """Runs jobs on a small thread pool as soon as they are enqueued (and on a sweep)."""

    def __init__(self, app: Any, workers: int = 4) -> None:
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job")
        self.slots = threading.BoundedSemaphore(workers)

    def wake(self) -> None:
        if self.slots.acquire(blocking=False):
            self.pool.submit(self._drain)

    def _drain(self) -> None:
        try:
            with self.app.app_context(), database.connection_context():
                run_pending()
        except Exception:
            log.exception("the job runner failed")
        finally:
            self.slots.release()

    def start(self) -> None:
        with self.app.app_context(), database.connection_context():
            recovered = recover_interrupted()
        if recovered:
            log.warning("resuming %s job(s) interrupted by the last shutdown", recovered)
        _waker.append(self.wake)
        self.wake()  # jobs left from before a restart

    def stop(self) -> None:
        if self.wake in _waker:
            _waker.remove(self.wake)
        self.pool.shutdown(wait=True, cancel_futures=True)
