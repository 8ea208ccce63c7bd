"""The working set stays small and does not grow under steady load.

- A served appliance takes 20,000 mixed requests (API key and access token on several
  routes, dashboard pages with a session cookie) from four kept-alive clients; its
  resident set (VmRSS) is sampled every 2,000 and the last sample is within 5 % of the
  one at 4,000 (the first 4,000 warm the caches, templates and pools up).
- tracemalloc, in process: what a steady run of requests leaves allocated is small, and
  a signup (which checks the password against the common-password list) does not load
  zxcvbn's dictionaries.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.factories import PASSWORD, api, bearer, csrf_from, login, make_user, sign_in

TOTAL = 20_000
SAMPLE_EVERY = 2_000
CLIENTS = 4
GROWTH_MAX = 0.05  # last sample over the one at 4,000
LIMITS = {"APPLIANCE_RATE_LIMIT_USER_PER_MINUTE": "10000000",
          "APPLIANCE_RATE_LIMIT_AUTH_PER_MINUTE": "10000000"}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def _account(url: str) -> tuple[dict[str, str], dict[str, str], str]:
    """Bearer headers, API-key headers and the default project of ada, over HTTP."""
    tokens = requests.post(url + "/api/v1/auth/login", timeout=30,
                           json={"email": "ada@example.test", "password": PASSWORD}).json()
    token = {"Authorization": f"Bearer {tokens['access_token']}"}
    projects = requests.get(url + "/api/v1/projects", headers=token, timeout=30).json()["data"]
    project = next(p["id"] for p in projects if p["is_default"])
    made = requests.post(url + "/api/v1/api-keys", headers=token, timeout=30,
                         json={"name": "load", "scopes": ["instances:read"],
                               "rate_limit_rpm": 100_000})
    assert made.status_code == 201, made.text
    return token, {"X-API-Key": made.json()["secret"]}, project


def _cookie_session(url: str) -> requests.Session:
    session = requests.Session()
    page = session.get(url + "/signin", timeout=30).text
    signed = session.post(url + "/signin", timeout=30, data={
        "email": "ada@example.test", "password": PASSWORD, "csrf_token": csrf_from(page)})
    assert signed.status_code == 200 and "appliance_session" in session.cookies, signed.url
    return session


def test_a_served_appliance_does_not_grow_under_steady_load(serve, make_app, data_dir):
    app = make_app()  # the migrations run before the server starts
    make_user(app, "ada@example.test")
    server = serve(APPLIANCE_DATA_DIR=str(data_dir), **LIMITS)
    url = server.url
    token, key, project = _account(url)
    api_paths = ["/api/v1/auth/me", f"/api/v1/projects/{project}",
                 f"/api/v1/projects/{project}/instances", "/api/v1/projects",
                 "/api/v1/health"]
    key_paths = [f"/api/v1/projects/{project}/instances", "/api/v1/health",
                 f"/api/v1/projects/{project}/jobs"]
    pages = ["/dashboard", f"/projects/{project}", "/billing", "/usage"]
    sessions = [(requests.Session(), _cookie_session(url)) for _ in range(CLIENTS)]

    def client(index: int, count: int) -> list[str]:
        plain, web = sessions[index]
        wrong = []
        for n in range(count):
            kind = (n + index) % 10
            if kind == 0:
                path, answer = pages[n % len(pages)], web.get(url + pages[n % len(pages)])
            elif kind % 2:
                path = key_paths[n % len(key_paths)]
                answer = plain.get(url + path, headers=key)
            else:
                path = api_paths[n % len(api_paths)]
                answer = plain.get(url + path, headers=token)
            if answer.status_code != 200:
                wrong.append(f"{path}: {answer.status_code}")
        return wrong

    samples = []
    with ThreadPoolExecutor(CLIENTS) as pool:
        for _ in range(TOTAL // SAMPLE_EVERY):
            share = SAMPLE_EVERY // CLIENTS
            wrong = [w for found in pool.map(client, range(CLIENTS), [share] * CLIENTS)
                     for w in found]
            assert not wrong, wrong[:5]
            samples.append(rss_kb(server.process.pid))
    at_4000, last = samples[1], samples[-1]
    assert last <= at_4000 * (1 + GROWTH_MAX), [round(s / 1024, 1) for s in samples]


def test_steady_requests_leave_little_allocated(make_app):
    # 1,800 signed-in requests in well under a minute: above the per-user rate limit
    app = make_app(RATE_LIMIT_USER_PER_MINUTE=100_000)
    client = app.test_client()
    make_user(app, "ada@example.test")
    token = bearer(login(client, "ada@example.test"))
    project = next(p["id"] for p in api(client, "GET", "/projects", token).get_json()["data"]
                   if p["is_default"])
    assert sign_in(client).status_code == 302

    def run(count: int) -> None:
        for n in range(count):
            path = ("/auth/me", f"/projects/{project}", f"/projects/{project}/instances")[n % 3]
            assert api(client, "GET", path, token).status_code == 200
            if n % 10 == 0:
                assert client.get("/dashboard").status_code == 200

    run(300)  # caches, templates and pools warm up
    tracemalloc.start(10)
    try:
        before = tracemalloc.take_snapshot()
        run(1_500)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = after.compare_to(before, "filename")
    total = sum(stat.size_diff for stat in grown)
    top = [f"{stat.traceback[0].filename}: {stat.size_diff / 1024:.0f} KiB"
           for stat in grown[:5]]
    assert total < 512 * 1024, top


def test_a_signup_does_not_load_the_password_dictionaries(tmp_path):
    """The common-password check reads its list without importing zxcvbn (whose import
    builds every dictionary it has, about 14 MB kept for the process's life)."""
    script = (
        "import sys, appliance\n"
        "app = appliance.create_app({'DATA_DIR': sys.argv[1]}, offer_setup=False)\n"
        "client = app.test_client()\n"
        "ok = client.post('/api/v1/auth/signup', json={'email': 'new@example.test', "
        f"'password': {PASSWORD!r}}}).status_code\n"
        "common = client.post('/api/v1/auth/signup', json={'email': 'b@example.test', "
        "'password': 'password1'}).get_json()['error']['code']\n"
        "print(ok, common, sorted(m for m in sys.modules if m.startswith('zxcvbn')))\n")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split("\n")[-2] == "201 password_too_common []", result.stdout
