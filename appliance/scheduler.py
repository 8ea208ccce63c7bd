"""Background work in the serving process: periodic tasks (an APScheduler
BackgroundScheduler) and the job runner's worker threads.

Each task is a plain service function run in the app's context with its own database
connection; a failing run is logged and the next run comes as scheduled. Tasks are
idempotent (they claim rows with conditional UPDATEs or delete what is due), so a task
that runs late or twice does no harm. With several processes on one PostgreSQL database,
only the holder of the scheduler's lease (services/ops/leader.py) runs the periodic
tasks; every process runs jobs and webhook deliveries, each claimed once.

`appliance serve` starts the scheduler; tests call `run_task(app, name)` instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask, current_app

from appliance import config, db
from appliance.db import database
from appliance.services.accounts import api_keys, mail, setup_link, users
from appliance.services.billing import invoices, metering, prepaid
from appliance.services.events import notifications
from appliance.services.instances import backup_check, backup_tiers, engine_jobs, jobs, nodes
from appliance.services.limits import idempotency
from appliance.services.metrics import sampling
from appliance.services.ops import dashboard_metrics, leader, retention, selfbackup
from appliance.services.webhooks import dispatcher

log = logging.getLogger("appliance.scheduler")


@dataclass(frozen=True)
class Task:
    name: str
    seconds: int
    run: Callable[[], object]
    help: str
    at_start: bool = False  # also run once right after start-up (catching up a downtime)
    # Runs in every process (it writes what this process counted in memory, or wakes this
    # process's own workers); the others only in the process holding the lease.
    every_process: bool = False


def _tasks() -> list[Task]:
    return [
        Task("lift_ended_suspensions", 60, users.lift_ended_suspensions,
             "Lift the suspensions an administrator gave an end (until) once it passed.",
             at_start=True),
        Task("flush_key_usage", 30, api_keys.flush_usage,
             "Write API keys' counted uses (last_used_at, usage_count).",
             every_process=True),
        Task("sample_metrics", 60, _sample_metrics,
             "Write counted API requests and running instances per account for the "
             "dashboard charts; delete samples older than 8 days.", every_process=True),
        Task("sample_resources", _setting("INSTANCE_METRICS_INTERVAL_SECONDS"),
             sampling.tick,
             "Read running instances' CPU, memory, network and disk and every node's host "
             "figures from the engines (one request per node) and store them."),
        Task("purge_old_metrics", 3600, retention.purge_metrics,
             "Delete resource metric rows past their resolution's retention."),
        Task("retry_mail", 300, mail.retry_failed, "Re-send mail that failed."),
        Task("purge_idempotency", 3600, idempotency.purge_expired,
             "Delete Idempotency-Key records older than 24 hours."),
        Task("check_nodes", _setting("ENGINE_CHECK_INTERVAL_SECONDS"), nodes.check_all,
             "Check every node's engine and discover its images."),
        Task("reconcile_instances", _setting("ENGINE_CHECK_INTERVAL_SECONDS"),
             engine_jobs.reconcile_all,
             "Bring instance rows in line with what the engines report."),
        Task("meter_usage", _setting("METERING_INTERVAL_SECONDS"), _meter_usage,
             "Record every started hour of usage and debit it (idempotent)."),
        Task("issue_invoices", 3600, _issue_invoices,
             "Issue last month's invoices once it has ended (idempotent).", at_start=True),
        Task("enforce_billing", 300, _enforce_billing,
             "Grace periods, suspensions for unpaid balances or spend caps, and lifting them."),
        Task("webhook_sweep", 30, dispatcher.sweep,
             "Wake the webhook dispatcher; forget rotated-out webhook secrets.",
             every_process=True),
        Task("mail_notifications", 60, _mail_notifications,
             "Email the notifications that call for it (low balance, suspension, invoice)."),
        Task("notify_expiring_keys", 86400, _notify_expiring_keys,
             "Tell owners, once per key, of API keys expiring within 7 days.", at_start=True),
        Task("purge_old_events", 86400, _purge_old_events,
             "Delete events, finished webhook deliveries and read notifications older "
             "than EVENT_RETENTION_DAYS (in batches)."),
        Task("remind_setup_link", setup_link.REMIND_SECONDS, _remind_setup_link,
             "While no account exists, log the first-run set-up link again.",
             every_process=True),
        Task("self_backup", 900, _self_backup,
             "Back up the appliance once a UTC day into SELF_BACKUP_DIR and keep the newest "
             "SELF_BACKUP_KEEP archives (unless SELF_BACKUP_SCHEDULE is off)."),
        Task("scheduled_backups", 60, _scheduled_backups,
             "Queue the backup tiers' due daily backups (each instance at its slot of "
             "BACKUP_TIER_HOUR, never beside another job of it) and prune expired ones."),
    ]


def _scheduled_backups() -> object:
    return backup_tiers.run()


def _remind_setup_link() -> object:
    return setup_link.remind(current_app.extensions.get("setup_token"))


def _mail_notifications() -> object:
    return notifications.send_pending_mail()


def _sample_metrics() -> object:
    return dashboard_metrics.flush_samples()


def _notify_expiring_keys() -> object:
    return notifications.notify_expiring_keys()


def _purge_old_events() -> object:
    return retention.purge_old()


def _self_backup() -> object:
    return selfbackup.run_scheduled()


def _meter_usage() -> object:
    return metering.tick()


def _setting(name: str) -> int:
    """An interval setting of the app built last (the default before any app is built)."""
    try:
        return config.active()[name]
    except config.ConfigError:  # no app built yet: the default
        return config.SETTINGS_BY_NAME[name].default


def _enforce_billing() -> object:
    return prepaid.enforce()


def _issue_invoices() -> object:
    return invoices.generate_due()


def tasks() -> dict[str, Task]:
    return {task.name: task for task in _tasks()}


def run_task(app: Flask, name: str) -> object:
    """Run one task now in `app`'s context (what the scheduler does on each tick)."""
    task = tasks()[name]
    with app.app_context(), database.connection_context():
        return task.run()


def _guarded(app: Flask, name: str) -> None:
    if not tasks()[name].every_process and not leader.is_leader():
        return  # another process holds the lease and runs it
    try:
        run_task(app, name)
    except Exception:  # a failing run must not stop the schedule
        log.exception("scheduled task %s failed", name)


def _renew_lease(app: Flask) -> None:
    """Take or keep the lease of the periodic tasks (services/ops/leader.py)."""
    was = leader.is_leader()
    try:
        with app.app_context(), database.connection_context():
            now = leader.renew(_setting("LEADER_LEASE_SECONDS"), sole=db.is_sqlite())
    except Exception:  # the database is away: lead nothing until it is back
        leader.reset()
        log.exception("could not renew the scheduler's lease")
        now = False
    if now != was:
        log.info("this process %s the periodic tasks (%s)",
                 "now runs" if now else "no longer runs", leader.IDENTITY)


def start(app: Flask) -> BackgroundScheduler:
    """Start the periodic tasks in background threads; `shutdown()` the result to stop.

    On the very first start (no node yet) every reachable local engine is registered.
    """
    _renew_lease(app)
    with app.app_context(), database.connection_context():
        if db.is_sqlite() or leader.is_leader():
            nodes.register_local_engines()
        # Before the job runner: no backup job runs while the store is compared. With
        # several processes (PostgreSQL), only while no job runs in any of them.
        if db.is_sqlite() or not jobs.any_running():
            backup_check.check()
    runner = app.extensions["job_runner"] = jobs.Runner(app)
    runner.start()
    app.extensions["webhook_dispatcher"] = dispatcher.Dispatcher(app)
    app.extensions["webhook_dispatcher"].start()
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": 60})
    for task in _tasks():
        first = {"next_run_time": dt.datetime.now(dt.UTC)} if task.at_start else {}
        scheduler.add_job(_guarded, "interval", seconds=task.seconds, args=(app, task.name),
                          id=task.name, name=task.help, **first)
    # Enqueueing wakes the runner at once; this sweep catches retries that came due.
    scheduler.add_job(runner.wake, "interval", seconds=5, id="run_due_jobs",
                      name="Run jobs whose retry delay has passed.")
    scheduler.add_job(_renew_lease, "interval", args=(app,),
                      seconds=max(1, _setting("LEADER_LEASE_SECONDS") // 3),
                      id="scheduler_lease", name="Take or keep the periodic tasks' lease.")
    scheduler.start()
    app.extensions["scheduler"] = scheduler
    log.info("scheduler started: %s", ", ".join(t.name for t in _tasks()))
    return scheduler


def stop(app: Flask) -> None:
    """Stop the scheduler and run the tasks that must not lose work (key usage, counted
    API requests)."""
    scheduler = app.extensions.pop("scheduler", None)
    if scheduler is not None:
        scheduler.shutdown(wait=True)
    runner = app.extensions.pop("job_runner", None)
    if runner is not None:
        runner.stop()
    webhook_dispatcher = app.extensions.pop("webhook_dispatcher", None)
    if webhook_dispatcher is not None:
        webhook_dispatcher.stop()
    _guarded(app, "flush_key_usage")
    _guarded(app, "sample_metrics")
    if leader.is_leader():
        try:
            with app.app_context(), database.connection_context():
                leader.release()
        except Exception:  # the lease then runs out by itself
            log.exception("could not release the scheduler's lease")
