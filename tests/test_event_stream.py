"""GET /api/v1/events/stream against a served appliance: the caller's events arrive live,
a reconnect with Last-Event-ID gets only later ones, the caps answer 429, and nobody
sees another user's events. The lifetime and heartbeats are checked in-process."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time

import pytest
import requests

from appliance.db import database
from appliance.services.events import live, outbox
from appliance.services.principal import Principal
from tests.factories import api, bearer, create_key, fake_catalog, key_auth, login, make_user

WAIT = 15.0


class Stream:
    """An open SSE response read on a thread: parsed events land in a queue."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.response = requests.get(url, headers=headers, stream=True, timeout=(5, 60))
        self.events: queue.Queue = queue.Queue()
        self.comments: list[str] = []
        if self.response.status_code == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        block: dict[str, str] = {}
        try:
            for line in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                if line == "":
                    if "data" in block:
                        self.events.put({"id": block.get("id"), "event": block.get("event"),
                                         "data": json.loads(block["data"])})
                    block = {}
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    name, _, value = line.partition(":")
                    block[name] = value.removeprefix(" ")
        except (requests.RequestException, AttributeError, ValueError):
            pass  # closed by the test
        self.events.put(None)

    def next_event(self, type: str | None = None, timeout: float = WAIT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            item = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            assert item is not None, "the stream ended"
            if type is None or item["event"] == type:
                return item

    def drain(self, seconds: float) -> list[dict]:
        found, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                item = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is not None:
                found.append(item)
        return found

    def close(self) -> None:
        """Hang up for real: shut the socket down (closing the response alone leaves the
        connection open while the reader thread still holds it)."""
        connection = getattr(self.response.raw, "_connection", None)
        sock = getattr(connection, "sock", None)
        if sock is None:  # urllib3 lets go of the connection while the body is read
            body = getattr(getattr(self.response.raw, "_fp", None), "fp", None)
            sock = getattr(getattr(body, "raw", None), "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


@pytest.fixture
def served(make_app, serve, data_dir):
    app = make_app()
    for name in ("ada", "bob", "cy"):
        make_user(app, f"{name}@example.test")
    catalog = fake_catalog(app)
    server = serve(APPLIANCE_DATA_DIR=str(data_dir), APPLIANCE_EVENT_STREAMS_PER_USER="2",
                   APPLIANCE_EVENT_STREAMS_MAX="3", APPLIANCE_THREADS="8")
    streams: list[Stream] = []

    class Served:
        url = server.url
        process = server
        plan, image = catalog["plan"], catalog["image"]

        def headers(self, name: str) -> dict[str, str]:
            tokens = requests.post(f"{server.url}/api/v1/auth/login", timeout=10, json={
                "email": f"{name}@example.test", "password": "correct horse battery staple"})
            assert tokens.status_code == 200, tokens.text
            return {"Authorization": f"Bearer {tokens.json()['access_token']}"}

        def stream(self, headers: dict[str, str], **extra: str) -> Stream:
            opened = Stream(f"{server.url}/api/v1/events/stream", {**headers, **extra})
            streams.append(opened)
            return opened

        def call(self, method: str, path: str, headers: dict[str, str], **kwargs):
            return requests.request(method, f"{server.url}/api/v1{path}", headers=headers,
                                    timeout=10, **kwargs)

        def create_instance(self, headers: dict[str, str], name: str) -> dict:
            projects = self.call("GET", "/projects", headers).json()["data"]
            project = next(p["id"] for p in projects if p["is_default"])
            made = self.call("POST", f"/projects/{project}/instances", headers, json={
                "name": name, "plan_id": self.plan, "image_id": self.image})
            assert made.status_code == 202, made.text
            return made.json()["instance"]

    yield Served()
    for opened in streams:
        opened.close()


def test_the_caller_receives_their_instance_events_and_nobody_else_does(served):
    ada, bob = served.headers("ada"), served.headers("bob")
    ada_stream, bob_stream = served.stream(ada), served.stream(bob)
    assert ada_stream.response.status_code == 200
    assert ada_stream.response.headers["Content-Type"].startswith("text/event-stream")
    instance = served.create_instance(ada, "web-1")
    created = ada_stream.next_event("instance.created")
    assert created["id"].startswith("evt_")
    assert created["data"]["type"] == "instance.created"
    assert created["data"]["data"]["instance"]["id"] == instance["id"]
    ready = ada_stream.next_event("instance.ready")
    assert ready["data"]["data"]["instance"]["status"] == "running"
    assert ready["id"] > created["id"]
    theirs = served.create_instance(bob, "bobs")
    assert bob_stream.next_event("instance.ready")["data"]["data"]["instance"]["id"] == (
        theirs["id"])
    seen_by_bob = [e["data"]["data"].get("instance", {}).get("id") for e in bob_stream.drain(1)]
    assert instance["id"] not in seen_by_bob
    assert all(e["data"]["data"].get("instance", {}).get("id") != theirs["id"]
               for e in ada_stream.drain(1.5))


def test_a_reconnect_with_last_event_id_gets_only_later_events(served):
    ada = served.headers("ada")
    first = served.stream(ada)
    served.create_instance(ada, "web-1")
    created = first.next_event("instance.created")
    first.close()
    # While nobody listens: more of ada's events.
    assert served.call("POST", "/api-keys", ada, json={
        "name": "ci", "scopes": ["instances:read"]}).status_code == 201
    again = served.stream(ada, **{"Last-Event-ID": created["id"]})
    assert again.response.status_code == 200
    later = [again.next_event()]
    later += again.drain(2)
    types = [e["event"] for e in later]
    assert "instance.created" not in types
    assert "api_key.created" in types and "instance.ready" in types
    assert all(e["id"] > created["id"] for e in later)
    assert [e["id"] for e in later] == sorted(e["id"] for e in later)


def test_a_users_newest_stream_replaces_their_oldest_and_the_total_is_capped(served):
    ada, bob, cy = served.headers("ada"), served.headers("bob"), served.headers("cy")
    oldest, first = served.stream(ada), served.stream(ada)
    assert (oldest.response.status_code, first.response.status_code) == (200, 200)
    newest = served.stream(ada)  # past ada's cap of 2: her oldest stream ends instead
    assert newest.response.status_code == 200
    assert oldest.events.get(timeout=WAIT) is None  # the server ended it
    assert ": replaced by a newer stream of yours" in oldest.comments
    assert served.stream(bob).response.status_code == 200
    full = served.stream(cy)
    assert full.response.status_code == 429
    assert full.response.json()["error"]["details"]["scope"] == "server"
    first.close()  # the server notices the client left and frees its thread
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        retry = served.stream(cy)
        if retry.response.status_code == 200:
            break
        time.sleep(0.3)
    assert retry.response.status_code == 200


def test_keys_need_webhooks_read_and_a_bad_last_event_id_is_400(app, client):
    make_user(app, "ada@example.test")
    headers = bearer(login(client, "ada@example.test"))
    secret, _ = create_key(client, headers, ["instances:read"])
    refused = api(client, "GET", "/events/stream", key_auth(secret))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "scope_denied"
    bad = api(client, "GET", "/events/stream", {**headers, "Last-Event-ID": "nope"})
    assert bad.status_code == 400
    assert bad.get_json()["error"]["details"]["field"] == "Last-Event-ID"
    assert api(client, "GET", "/events/stream", {}).status_code == 401
    assert live.open_streams() == 0


def test_a_stream_heartbeats_ends_after_its_lifetime_and_gives_its_slot_back(
        app, monkeypatch):
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(live, "limits", lambda: (1, 1, 1.0))
    user, other = make_user(app, "ada@example.test"), make_user(app, "bob@example.test")
    with app.app_context():
        principal = Principal(user, None, "session")
        first = live.open_stream(principal)
        stream = live.open_stream(principal)  # past her cap of 1: it replaces first
        assert "replaced by a newer stream" in "".join(first)
        assert live.open_streams() == 1
        with pytest.raises(Exception, match="live streams are open on this server"):
            live.open_stream(Principal(other, None, "session"))  # the total of 1
        with database.atomic():
            outbox.emit("billing.credited", user_id=user.id, data={"amount": 1})
        started = time.monotonic()
        chunks = list(stream)
        assert 0.5 < time.monotonic() - started < 3
    text = "".join(chunks)
    assert text.startswith("retry: 3000\n")
    assert "event: billing.credited\n" in text and text.count(": heartbeat") >= 2
    assert chunks[-1].startswith(": this stream ends now")
    assert live.open_streams() == 0


def test_the_stream_is_in_the_openapi_document_as_text_event_stream(client):
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/events/stream"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"session": []} in operation["security"] and "429" in operation["responses"]


def test_stopping_the_server_ends_open_streams_at_once(served):
    """SIGTERM ends every stream with a comment saying so, so no worker thread is left
    for waitress to wait out (it logs "thread(s) still running" when one is)."""
    stream = served.stream(served.headers("ada"))
    assert stream.response.status_code == 200
    log = served.process.stop()
    assert stream.events.get(timeout=WAIT) is None  # the stream ended
    assert ": the server is stopping; reconnect with Last-Event-ID" in stream.comments
    assert "still running" not in log

