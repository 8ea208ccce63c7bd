"""Web consoles on a served appliance (`appliance serve`), over real HTTP.

- The caps: with CONSOLE_SESSIONS_PER_USER=2 the third console a user opens is 429
  `too_many_consoles` with Retry-After; closing one lets the next open.
- A flood of keystrokes does not block other requests: with THREADS=2 and every console
  slot taken by an attached output stream (each holds a server thread), four clients
  typing as fast as they can still leave the server answering /health - consoles get
  worker threads of their own.
- Through a real nginx (Debian's, on 127.0.0.1, configured by the test as
  docs/operations.md says) in front of the appliance, a console on a real Incus instance
  opens, streams and echoes `echo hello-$RANDOM`.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time

import pytest
import requests

from appliance import create_app, drivers
from appliance.models import Plan
from appliance.services import clock
from appliance.services.instances import nodes
from tests.browser import ApplianceServer, running
from tests.conftest import free_port
from tests.driver_contract import require_engine
from tests.factories import PASSWORD, make_user, wait_for

pytestmark = pytest.mark.slow

OWNER = "typist@example.test"
NGINX = "/usr/sbin/nginx"


def _seed(data, engine: str, endpoint: str = "") -> None:
    app = create_app({"DATA_DIR": str(data)})
    make_user(app, OWNER)
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_small", slug="small", name="Small", vcpus=1, memory_mb=128,
                    disk_gb=1, price_hourly=0, price_monthly_cap=0, created_at=now,
                    updated_at=now)
        node = nodes._insert(engine, engine, endpoint, options={}, enabled=True,
                             capacity=nodes.Capacity(8, 8192, 100))
        assert nodes.check_health(node).health == "healthy"


def _serve(workdir, engine: str, endpoint: str = "", **settings: str):
    data = workdir / "data"
    _seed(data, engine, endpoint)
    env = {"APPLIANCE_DATA_DIR": str(data),
           **{f"APPLIANCE_{name}": value for name, value in settings.items()}}
    yield from running(ApplianceServer(workdir, env))


class Client:
    def __init__(self, url: str) -> None:
        self.base = url + "/api/v1"
        self.http = requests.Session()
        login = self.http.post(self.base + "/auth/login", timeout=10,
                               json={"email": OWNER, "password": PASSWORD})
        assert login.status_code == 200, login.text
        self.http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        self.project = self.call("GET", "/projects", 200)["data"][0]["id"]

    def call(self, method: str, path: str, status: int, **kwargs):
        response = self.http.request(method, self.base + path, timeout=60, **kwargs)
        assert response.status_code == status, (path, response.status_code, response.text)
        return response.json() if response.content else {}

    def instance(self, engine: str, name: str) -> str:
        images = self.call("GET", "/images", 200)["data"]
        image = next(i for i in images if i["engine"] == engine)
        created = self.call("POST", f"/projects/{self.project}/instances", 202, json={
            "name": name, "plan_id": "small", "image_id": image["id"]})
        path = f"/projects/{self.project}/instances/{created['instance']['id']}"
        wait_for(lambda: self.call("GET", path, 200)["status"] == "running"
                 and self.call("GET", path, 200)["job"] is None, "the create", timeout=120)
        return created["instance"]["id"]

    def open(self, instance_id: str, status: int = 201) -> dict:
        return self.call("POST", f"/projects/{self.project}/instances/{instance_id}/console",
                         status, json={"cols": 80, "rows": 24})

    def absolute(self, path: str) -> str:
        return self.base.removesuffix("/api/v1") + path

    def type(self, opened: dict, text: bytes) -> requests.Response:
        return self.http.post(self.absolute(opened["input_url"]), timeout=30,
                              json={"data": base64.b64encode(text).decode()})


class Reader(threading.Thread):
    """Reads a console's SSE stream; `output` collects the bytes, `events` the kinds."""

    def __init__(self, client: Client, opened: dict) -> None:
        super().__init__(daemon=True)
        self.response = client.http.get(client.absolute(opened["stream_url"]), stream=True,
                                        timeout=60)
        assert self.response.status_code == 200, self.response.text
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.output = bytearray()
        self.events: queue.Queue[str] = queue.Queue()
        self.start()

    def run(self) -> None:
        text = ""
        try:
            for chunk in self.response.iter_content(chunk_size=None, decode_unicode=True):
                text += chunk
                while "\n\n" in text:
                    block, text = text.split("\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.splitlines()
                                  if ": " in line and not line.startswith(":"))
                    if fields.get("event") == "output":
                        self.output += base64.b64decode(json.loads(fields["data"])["data"])
                    if "event" in fields:
                        self.events.put(fields["event"])
        except (requests.RequestException, AttributeError, ValueError, OSError):
            pass  # closed by the test (urllib3 drops its file object on close)

    def wait_for(self, pattern: bytes, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, bytes(self.output))
            if found:
                return found.group(0)
            time.sleep(0.01)
        raise AssertionError(f"{pattern!r} not in {bytes(self.output)!r}")

    def close(self) -> None:
        self.response.close()


# -- the caps and a flood, on the simulated engine ---------------------------------------

@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    yield from _serve(tmp_path_factory.mktemp("console-served"), "fake", "fake://served",
                      THREADS="2", CONSOLE_SESSIONS_PER_USER="3", CONSOLE_SESSIONS_MAX="3",
                      RATE_LIMIT_USER_PER_MINUTE="1000000")  # threads are the subject here


def test_the_caps_answer_429_with_retry_after_and_a_closed_console_frees_its_slot(
        fake_server):
    client = Client(fake_server.url)
    instance_id = client.instance("fake", "capped")
    opened = [client.open(instance_id)["console"] for _ in range(3)]
    refused = client.open(instance_id, status=429)
    assert refused["error"]["code"] == "too_many_consoles"
    response = client.http.post(client.base + f"/projects/{client.project}/instances/"
                                f"{instance_id}/console", json={}, timeout=10)
    assert int(response.headers["Retry-After"]) > 0
    for one in opened:
        _close(client, one)
    _close(client, client.open(instance_id)["console"])


def _close(client: Client, opened: dict) -> None:
    client.http.delete(client.absolute(opened["input_url"].removesuffix("/input")),
                       timeout=10).raise_for_status()


def test_a_flood_of_keystrokes_does_not_block_other_requests(fake_server):
    client = Client(fake_server.url)
    instance_id = client.instance("fake", "flooded")
    # Every console slot taken, each with its output stream attached (a server thread).
    opened = [client.open(instance_id)["console"] for _ in range(3)]
    readers = [Reader(client, one) for one in opened]
    stop = threading.Event()
    sent = [0] * 4
    refused: list[int] = []

    def flood(index: int) -> None:
        typist = requests.Session()
        typist.headers["Authorization"] = client.http.headers["Authorization"]
        url = client.absolute(opened[index % 3]["input_url"])
        body = {"data": base64.b64encode(b"x" * 64).decode()}
        while not stop.is_set():
            status = typist.post(url, json=body, timeout=30).status_code
            if status != 204:
                refused.append(status)
                return
            sent[index] += 1

    typists = [threading.Thread(target=flood, args=(i,), daemon=True) for i in range(4)]
    for typist in typists:
        typist.start()
    health, answered = requests.Session(), []
    try:
        wait_for(lambda: sum(sent) >= 200, "the flood to get going", timeout=60)
        for _ in range(20):
            response = health.get(fake_server.url + "/api/v1/health", timeout=10)
            assert response.status_code == 200
            answered.append(response)
        assert sum(sent) > 200  # the flood went on meanwhile
    finally:
        stop.set()
        for typist in typists:
            typist.join(timeout=30)
        for reader in readers:
            reader.close()
    assert len(answered) == 20
    assert refused == []
    # The echoes came back on the streams as the keys went in.
    assert all(len(reader.output) > 64 for reader in readers)


# -- through nginx, on Incus --------------------------------------------------------------

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Connection "";
            # Server-Sent Events (the console's output, live logs and events)
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""


@pytest.fixture(scope="module")
def incus_server(tmp_path_factory):
    require_engine("incus", lambda: drivers.connect("incus", "").info())
    yield from _serve(tmp_path_factory.mktemp("console-nginx"), "incus")


@pytest.fixture
def nginx(incus_server, tmp_path):
    if not shutil.which(NGINX):
        message = "nginx is not installed: run scripts/test-deps"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp_path, port=port,
                                      upstream=incus_server.url.rsplit(":", 1)[1]))
    process = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(tmp_path / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), "nginx to answer")
        yield url, tmp_path / "access.log"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        return requests.get(url + "/api/v1/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_the_console_works_through_nginx(nginx, incus_server):
    url, access_log = nginx
    client = Client(url)
    instance_id = client.instance("incus", "proxied")
    try:
        opened = client.open(instance_id)["console"]
        reader = Reader(client, opened)
        try:
            reader.wait_for(rb"[#$] ", 10)
            client.type(opened, b"echo hello-$RANDOM\r").raise_for_status()
            reader.wait_for(rb"\r\nhello-\d+\r\n", 1.0)
            client.type(opened, b"exit\r").raise_for_status()
            ended = wait_for(lambda: "end" in list(reader.events.queue), "the end event")
            assert ended
        finally:
            reader.close()
        # The requests really went through the proxy: it logged the stream and the input.
        logged = access_log.read_text()
        assert f"GET {opened['stream_url']} HTTP/1.1\" 200" in logged
        assert f"POST {opened['input_url']} HTTP/1.1\" 204" in logged
    finally:
        client.call("DELETE", f"/projects/{client.project}/instances/{instance_id}", 202)
