"""Web consoles and the live console log over the JSON API, on the simulated engine.

The fake engine's shell echoes what is typed and runs `echo`/`exit`, so the whole relay -
open, stream, input, resize, end, caps, rights, audit - is checked in-process here; the
real engines and a real browser are in test_console_engines.py and
test_browser_console.py.
"""

from __future__ import annotations

import base64
import json

import pytest

from appliance.drivers import fake
from appliance.models import AuditLog
from appliance.services.instances import console
from tests.factories import api, create_instance, create_key, key_auth


@pytest.fixture
def instance(app, client, owner, owner_project, catalog):
    return create_instance(app, client, owner, owner_project, catalog)


def _base(project, instance):
    return f"/projects/{project}/instances/{instance['id']}"


def _open(client, headers, project, instance, status=201, **body):
    response = api(client, "POST", _base(project, instance) + "/console", headers,
                   json=body or {})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def _type(client, headers, opened, text: bytes, status=204):
    body = {"data": base64.b64encode(text).decode()}
    response = client.post(opened["input_url"], headers=headers, json=body)
    assert response.status_code == status, response.get_json()
    return response


def _events(chunks, until: str = "end", limit: int = 200) -> list[tuple[str, dict]]:
    """(event, data) pairs of an SSE body, read until an `until` event."""
    found, text = [], ""
    for count, chunk in enumerate(chunks):
        text += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in text:
            block, text = text.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.splitlines()
                          if ": " in line and not line.startswith(":"))
            if "event" in fields:
                found.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == until:
                    return found
        if count >= limit:
            break
    return found


def _output(events) -> bytes:
    return b"".join(base64.b64decode(data["data"]) for kind, data in events
                    if kind == "output")


def test_a_member_types_into_the_shell_and_exit_ends_it(app, client, owner, owner_project,
                                                        instance):
    opened = _open(client, owner, owner_project, instance, cols=100, rows=30)["console"]
    assert opened["id"].startswith("con_") and opened["status"] == "open"
    assert opened["idle_timeout_seconds"] == 900
    assert fake._nodes["fake://tests"]["instances"]  # the instance's terminal exists
    _type(client, owner, opened, b"echo hello-$RANDOM\r")
    resized = client.post(opened["resize_url"], headers=owner, json={"cols": 120, "rows": 40})
    assert resized.status_code == 204
    _type(client, owner, opened, b"exit\r")
    response = client.get(opened["stream_url"], headers=owner)
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = _events(response.response)
    response.close()
    text = _output(events)
    assert b"echo hello-$RANDOM\r\nhello-" in text  # echoed as typed, then run
    assert events[-1] == ("end", {"reason": "exited", "message": console.MESSAGES["exited"]})
    # Ended: typing is 410, the session is gone from the count, both ends audited.
    _type(client, owner, opened, b"x", status=410)
    assert console.open_count() == 0
    with app.app_context():
        actions = [row.action for row in AuditLog.select().where(
            AuditLog.target_id == instance["id"]).order_by(AuditLog.created_at)]
        closed = AuditLog.get(AuditLog.action == "console.closed")
    assert actions[-2:] == ["console.opened", "console.closed"]
    assert json.loads(closed.details)["reason"] == "exited"


def test_output_is_bytes_in_base64_never_markup(client, owner, owner_project, instance):
    opened = _open(client, owner, owner_project, instance)["console"]
    _type(client, owner, opened, "echo <script>alert(1)</script> é\r".encode())
    _type(client, owner, opened, b"exit\r")
    response = client.get(opened["stream_url"], headers=owner)
    body = b"".join(response.response)
    assert b"<script>" not in body  # only inside the base64
    assert "<script>alert(1)</script> é".encode() in _output(_events([body]))


def test_a_viewer_cannot_open_one_and_an_outsider_sees_nothing(  # noqa: PLR0917
        client, owner, viewer, outsider, owner_project, instance):
    refused = _open(client, viewer, owner_project, instance, status=403)
    assert refused["error"]["code"] == "role_denied"
    _open(client, outsider, owner_project, instance, status=404)
    opened = _open(client, owner, owner_project, instance)["console"]
    # The role is checked before the session id: 403 for the viewer, 404 for the
    # outsider, whatever they try (another operator gets 404: projects_api's table).
    for method, path in (("GET", opened["stream_url"]), ("POST", opened["input_url"])):
        for who, status, code in ((viewer, 403, "role_denied"),
                                  (outsider, 404, "project_not_found")):
            response = client.open(path, method=method, headers=who,
                                   json={"data": "eA=="} if method == "POST" else None)
            assert response.status_code == status, path
            assert response.get_json()["error"]["code"] == code


def test_a_session_belongs_to_the_sign_in_that_opened_it(client, owner, owner_project,
                                                         instance):
    key, _ = create_key(client, owner, scopes=["instances:read", "instances:write"])
    opened = _open(client, owner, owner_project, instance)["console"]
    response = client.post(opened["input_url"], headers=key_auth(key),
                           json={"data": "eA=="})
    assert response.status_code == 404  # the same user, another credential
    read_only, _ = create_key(client, owner, scopes=["instances:read"])
    refused = _open(client, key_auth(read_only), owner_project, instance, status=403)
    assert refused["error"]["code"] == "scope_denied"


def test_caps_per_user_and_in_total_answer_429_with_retry_after(make_app, owner_user):
    app = make_app(CONSOLE_SESSIONS_PER_USER=2, CONSOLE_SESSIONS_MAX=3)
    client = app.test_client()
    from tests.factories import bearer, fake_catalog, login, make_user

    catalog = fake_catalog(app)
    owner = bearer(login(client, "owner@example.test"))
    project = api(client, "GET", "/projects", owner).get_json()["data"][0]["id"]
    instance = create_instance(app, client, owner, project, catalog)
    first = _open(client, owner, project, instance)["console"]
    _open(client, owner, project, instance)
    third = api(client, "POST", _base(project, instance) + "/console", owner, json={})
    assert third.status_code == 429
    assert third.headers["Retry-After"].isdigit()
    assert third.get_json()["error"]["code"] == "too_many_consoles"
    assert third.get_json()["error"]["details"]["scope"] == "user"
    # Another user fills the server's last slot; the next anyone asks for is 429 too.
    make_user(app, "other@example.test")
    other = bearer(login(client, "other@example.test"))
    other_project = api(client, "GET", "/projects", other).get_json()["data"][0]["id"]
    theirs = create_instance(app, client, other, other_project, catalog, name="theirs")
    _open(client, other, other_project, theirs)
    full = api(client, "POST", _base(other_project, theirs) + "/console", other, json={})
    assert (full.status_code, full.get_json()["error"]["details"]["scope"]) == (429, "server")
    # Closing one frees its slot.
    assert client.delete(first["input_url"].removesuffix("/input"),
                         headers=owner).status_code == 204
    _open(client, owner, project, instance)


def test_it_is_refused_on_a_stopped_instance_and_where_the_engine_cannot(  # noqa: PLR0917
        app, client, owner, owner_project, instance, monkeypatch):
    api(client, "POST", _base(owner_project, instance) + "/stop", owner)
    from tests.factories import run_jobs

    run_jobs(app)
    stopped = _open(client, owner, owner_project, instance, status=409)
    assert stopped["error"]["code"] == "invalid_state"
    api(client, "POST", _base(owner_project, instance) + "/start", owner)
    run_jobs(app)
    real = fake.FakeDriver.capabilities
    monkeypatch.setattr(fake.FakeDriver, "capabilities",
                        lambda self: real(self).__class__(console=True))
    unsupported = _open(client, owner, owner_project, instance, status=409)
    assert unsupported["error"]["code"] == "unsupported"
    assert unsupported["error"]["details"]["capability"] == "terminal"


def test_stopping_the_instance_ends_the_session_with_its_reason(
        app, client, owner, owner_project, instance):
    opened = _open(client, owner, owner_project, instance)["console"]
    api(client, "POST", _base(owner_project, instance) + "/stop", owner)
    from tests.factories import run_jobs

    run_jobs(app)
    response = client.get(opened["stream_url"], headers=owner)
    events = _events(response.response)
    assert events[-1][0] == "end" and events[-1][1]["reason"] == "instance_stopped"


def test_idle_sessions_are_closed(make_app):
    app = make_app(CONSOLE_IDLE_TIMEOUT_SECONDS=30)
    client = app.test_client()
    from tests.factories import bearer, fake_catalog, login, make_user

    make_user(app, "idle@example.test")
    catalog = fake_catalog(app)
    owner = bearer(login(client, "idle@example.test"))
    project = api(client, "GET", "/projects", owner).get_json()["data"][0]["id"]
    instance = create_instance(app, client, owner, project, catalog)
    opened = _open(client, owner, project, instance)["console"]
    session = next(iter(console._registry.sessions.values()))
    session.last_input -= 31  # as if the last key was pressed 31 s ago
    response = client.get(opened["stream_url"], headers=owner)
    assert _events(response.response)[-1][1]["reason"] == "idle"


def test_bad_input_names_the_field(client, owner, owner_project, instance):
    opened = _open(client, owner, owner_project, instance)["console"]
    response = client.post(opened["input_url"], headers=owner, json={"data": "not base64!"})
    assert response.status_code == 400
    assert response.get_json()["error"]["details"]["field"] == "data"


def test_the_console_log_follows_live_with_reset_snapshots(app, client, owner,
                                                           owner_project, instance):
    response = client.get(f"/api/v1{_base(owner_project, instance)}/logs/stream",
                          headers=owner)
    assert response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    first = _events(chunks, until="logs")
    assert first[-1][1]["reset"] is True
    assert "created from fake/debian-12" in first[-1][1]["data"]
    ref = next(iter(fake._nodes["fake://tests"]["instances"]))
    fake._nodes["fake://tests"]["instances"][ref]["log"].append("a new line")
    more = _events(chunks, until="logs")
    assert more[-1][1] == {"data": "\na new line", "reset": False}
    response.close()
    text = client.get(f"/api/v1{_base(owner_project, instance)}/logs", headers=owner)
    assert text.mimetype == "text/plain" and "a new line" in text.get_data(as_text=True)
