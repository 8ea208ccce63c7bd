"""Periodic tasks: each runs on its own, and `serve` runs them and flushes on shutdown."""

from __future__ import annotations

import datetime as dt

import requests

from appliance import create_app, scheduler
from appliance.models import ApiKey, IdempotencyRecord
from appliance.services import clock
from tests.factories import bearer, create_key, login, make_user


def test_every_task_runs_on_its_own(app):
    assert set(scheduler.tasks()) == {"lift_ended_suspensions", "flush_key_usage",
                                      "retry_mail", "purge_idempotency", "check_nodes",
                                      "reconcile_instances", "issue_invoices",
                                      "meter_usage", "enforce_billing", "webhook_sweep",
                                      "mail_notifications", "notify_expiring_keys",
                                      "sample_metrics", "purge_old_events", "remind_setup_link",
                                      "self_backup", "sample_resources", "purge_old_metrics",
                                      "scheduled_backups"}
    for name in scheduler.tasks():
        scheduler.run_task(app, name)


def test_the_flush_task_writes_counted_key_uses(app, client):
    make_user(app, "owner@example.test")
    secret, key = create_key(client, bearer(login(client, "owner@example.test")))
    client.get("/api/v1/projects", headers={"X-API-Key": secret})
    assert scheduler.run_task(app, "flush_key_usage") == 1
    with app.app_context():
        assert ApiKey.get_by_id(key["id"]).usage_count == 1


def test_the_purge_task_deletes_expired_idempotency_records(app, client):
    make_user(app, "owner@example.test")
    auth = bearer(login(client, "owner@example.test"))
    client.post("/api/v1/projects", json={"name": "x"}, headers={**auth, "Idempotency-Key": "k"})
    assert scheduler.run_task(app, "purge_idempotency") == 0
    clock.freeze(clock.now() + dt.timedelta(hours=25))
    assert scheduler.run_task(app, "purge_idempotency") == 1
    with app.app_context():
        assert IdempotencyRecord.select().count() == 0


def test_serve_runs_the_scheduler_and_flushes_key_usage_when_stopped(serve, tmp_path):
    data = tmp_path / "served"
    app = create_app({"DATA_DIR": str(data)})
    make_user(app, "owner@example.test")
    client = app.test_client()
    secret, key = create_key(client, bearer(login(client, "owner@example.test")))
    server = serve(APPLIANCE_DATA_DIR=str(data))
    for _ in range(3):
        assert requests.get(server.url + "/api/v1/projects",
                            headers={"X-API-Key": secret}, timeout=5).status_code == 200
    output = server.stop()
    assert "scheduler started" in output
    with app.app_context():
        assert ApiKey.get_by_id(key["id"]).usage_count == 3
