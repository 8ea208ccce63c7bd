"""A real `appliance serve` killed with SIGKILL while webhook deliveries are pending: after
a restart every event reaches every endpoint, each receiver saw each `webhook-id` as many
times as the delivery log says, and every request carries a valid signature."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import sys
import time
from collections import Counter

import requests

from appliance import create_app
from tests.conftest import Server, free_port
from tests.factories import api, bearer, login, make_user
from tests.receivers import Receiver, allow_loopback, signed_by

EVENTS = 12
INTERRUPTED_PREFIX = "The appliance stopped"

# Loaded by the served appliance (PYTHONPATH): its SSRF guard lets 127.0.0.1 through, as
# `allow_loopback` does in this process. Nothing else of production changes.
SITECUSTOMIZE = '''
from appliance.services.webhooks import ssrf

_strict = ssrf._refusal


def _refusal(address, allow_private):
    return None if str(address) == "127.0.0.1" else _strict(address, allow_private)


ssrf._refusal = _refusal
'''


def _serve(data_dir, site_dir) -> Server:
    server = Server([sys.executable, "-m", "appliance"], data_dir.parent,
                    {"APPLIANCE_DATA_DIR": str(data_dir), "PYTHONPATH": str(site_dir)})
    server.wait()
    return server


def _rows(db_path, sql, *args):
    with sqlite3.connect(db_path, timeout=30) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_kill_with_deliveries_pending_loses_none(tmp_path, monkeypatch):
    allow_loopback(monkeypatch)
    data_dir, site_dir = tmp_path / "data", tmp_path / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(SITECUSTOMIZE)
    app = create_app({"DATA_DIR": str(data_dir)})
    make_user(app, "owner@example.test")
    client = app.test_client()
    auth = bearer(login(client, "owner@example.test"))
    up = Receiver()
    down_port = free_port()  # nothing listens here until the appliance has been killed
    hooks = {}
    for name, url in (("up", up.url), ("down", f"http://127.0.0.1:{down_port}/hook")):
        response = api(client, "POST", "/webhooks", auth,
                       json={"url": url, "event_types": ["api_key.created"]})
        assert response.status_code == 201, response.get_json()
        hooks[name] = response.get_json()
    db_path = data_dir / "appliance.db"
    down = None
    try:
        server = _serve(data_dir, site_dir)
        for n in range(EVENTS):
            created = requests.post(server.url + "/api/v1/api-keys", headers=auth, timeout=10,
                                    json={"name": f"key {n}", "scopes": ["instances:read"]})
            assert created.status_code == 201, created.text
        time.sleep(secrets.SystemRandom().uniform(0.1, 1.0))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        pending = _rows(db_path, "SELECT COUNT(*) FROM webhook_delivery WHERE status = 'pending'")
        assert pending[0][0] >= EVENTS  # at least every delivery to the dead endpoint

        down = Receiver(port=down_port)
        server = _serve(data_dir, site_dir)
        try:
            deadline = time.monotonic() + 40
            while _rows(db_path, "SELECT COUNT(*) FROM webhook_delivery "
                                 "WHERE status = 'succeeded'")[0][0] < 2 * EVENTS:
                assert time.monotonic() < deadline, "the restarted appliance did not deliver"
                time.sleep(0.2)
        finally:
            server.stop()
    finally:
        up.close()
        if down is not None:
            down.close()

    event_ids = {row[0] for row in _rows(db_path, "SELECT id FROM event WHERE type = ?",
                                         "api_key.created")}
    assert len(event_ids) == EVENTS
    for name, receiver in (("up", up), ("down", down)):
        _check_receiver(db_path, hooks[name], receiver, event_ids)
    statuses = _rows(db_path, "SELECT status, COUNT(*) FROM webhook_delivery GROUP BY status")
    assert dict(statuses) == {"succeeded": 2 * EVENTS}


def _check_receiver(db_path, created: dict, receiver: Receiver, event_ids: set[str]) -> None:
    received = Counter(request.msg_id for request in receiver.received)
    assert set(received) == event_ids  # every event, under its own webhook-id
    assert all(signed_by(created["secret"], r) for r in receiver.received)
    attempts = _rows(db_path, "SELECT d.msg_id, a.status_code, a.error "
                              "FROM webhook_attempt a JOIN webhook_delivery d "
                              "ON a.delivery_id = d.id WHERE d.webhook_id = ?",
                     created["webhook"]["id"])
    answered = Counter(msg for msg, status, _ in attempts if status is not None)
    interrupted = Counter(msg for msg, status, error in attempts
                          if status is None and (error or "").startswith(INTERRUPTED_PREFIX))
    for msg_id in event_ids:
        # An attempt cut off by the kill may or may not have reached the receiver; every
        # other one is in the log exactly as the receiver saw it.
        assert answered[msg_id] <= received[msg_id] <= answered[msg_id] + interrupted[msg_id]
