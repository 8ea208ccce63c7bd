"""The `footprint` part of scripts/bench: the resident set after a standard workload, and
the dashboard's pages with a seeded account.

* RSS after the standard workload: a fresh `appliance serve` (LOADED_SETTINGS) takes one
  signup (POST /api/v1/auth/signup, its password checked against the common-password
  list), an API sign-in and a dashboard sign-in of an administrator made by
  create-admin, every dashboard page of PAGES once, the API reference (/docs/api) and
  WORKLOAD_REQUESTS (10,000) mixed API requests: GET /auth/me, GET project and GET
  projects with the access token, GET instances and GET jobs with an API key, from wrk
  (one thread, CONNECTIONS kept-alive connections, a Lua script rotating the requests
  and stopping after the count). VmRSS is read after a 1 s rest (`rss_workload_mb`,
  target < TARGET_WORKLOAD_RSS_MB), then again after STEADY_REQUESTS (50,000) more of
  the same (`rss_steady_mb`): the growth between the two is < TARGET_GROWTH (5 %).
  Every answer must be 200.
* Dashboard pages with a seeded account: a child interpreter (like benchmarks/seed.py)
  gives an administrator a project of SEED_INSTANCES (500) running instances (seed.py's
  rows), a month (30 days) of hourly usage records for 20 of them with their daily
  totals, LEDGER_ENTRIES (200) ledger entries and a webhook with WEBHOOK_DELIVERIES (50)
  succeeded deliveries. The session cookie comes from the dashboard's own sign-in form.
  Each of DASHBOARD_PAGES (overview, instances list, instance page, billing, usage,
  webhooks) is loaded by wrk with the cookie: on one connection for its p99 (target <
  TARGET_PAGE_P99_MS, 50 ms) and on CONNECTIONS for its req/s, a ratio to the bare Flask
  baseline's health req/s measured alternately in the same run (target >=
  TARGET_PAGE_RATIO, 0.2). Every answer must be 200 (a wrk script counts the others).
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import re
import secrets
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import (
    BENCH_EMAIL,
    CONNECTIONS,
    HOST,
    LOADED_SETTINGS,
    SCRIPTS_DIR,
    BenchError,
    Row,
    Server,
    call_json,
    create_account,
    rss_mb,
    running,
    server_env,
    sign_in,
    start_appliance,
    start_baseline,
    wait_healthy,
)
from benchmarks.wrk import NON_200_LUA, Endpoint, load, run_wrk, wrk_bin

WORKLOAD_REQUESTS = 10_000
STEADY_REQUESTS = 50_000
TARGET_WORKLOAD_RSS_MB = 110.0
TARGET_GROWTH = 0.05
TARGET_PAGE_P99_MS = 50.0
TARGET_PAGE_RATIO = 0.2
SEED_TIMEOUT_S = 180
USAGE_DAYS = 30
USAGE_INSTANCES = 20
LEDGER_ENTRIES = 200
WEBHOOK_DELIVERIES = 50
# Every page the dashboard has for a signed-in account ({p}: the default project).
PAGES = ("/dashboard", "/projects", "/projects/{p}", "/projects/{p}/instances",
         "/projects/{p}/instances/new", "/projects/{p}/backups", "/billing",
         "/billing/invoices", "/usage", "/webhooks", "/keys",
         "/events", "/notifications", "/account", "/account/limits", "/admin/")
DASHBOARD_PAGES = (("overview", "/dashboard"), ("instances list", "/projects/{p}/instances"),
                   ("instance page", "/projects/{p}/instances/{i}"), ("billing", "/billing"),
                   ("usage", "/usage"), ("webhooks", "/webhooks"))

# wrk script for the workload: rotates REQUESTS (method, path, headers), counts the
# answers that are not 200 and stops each connection's thread after `limit` answers.
WORKLOAD_LUA = """\
-- scripts/bench: mixed API requests with a key and an access token, then stop.
local threads = {{}}
local limit = {limit}
local specs = {specs}
function setup(thread) table.insert(threads, thread) end
function init(args)
  not200 = 0; answered = 0; n = 0; reqs = {{}}
  for i, s in ipairs(specs) do reqs[i] = wrk.format("GET", s[1], s[2]) end
end
function request() n = n + 1; return reqs[(n % #reqs) + 1] end
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then not200 = not200 + 1 end
  if answered >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("not200") end
  io.write(string.format("Non-200 responses: %d\\n", total))
end
"""
WORKLOAD_CAP_S = 300  # wrk's -d: the count stops it long before


def _lua_specs(requests: list[tuple[str, dict[str, str]]]) -> str:
    items = []
    for path, headers in requests:
        fields = ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
        items.append(f"{{{json.dumps(path)}, {{{fields}}}}}")
    return "{" + ", ".join(items) + "}"


def run_workload(server: Server, work: Path, name: str, count: int,
                 requests: list[tuple[str, dict[str, str]]]) -> tuple[int, int]:
    """`count` of `requests` in rotation from wrk; (answers, answers not 200)."""
    script = work / f"{name}.lua"
    script.write_text(WORKLOAD_LUA.format(limit=max(1, count // CONNECTIONS),
                                          specs=_lua_specs(requests)))
    argv = [wrk_bin(), "-t1", f"-c{CONNECTIONS}", f"-d{WORKLOAD_CAP_S}s", "-s", str(script),
            f"http://{HOST}:{server.port}{requests[0][0]}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=WORKLOAD_CAP_S + 30,
                          check=False)
    if done.returncode != 0:
        raise BenchError(f"wrk failed with status {done.returncode}:\n{done.stderr}")
    answered = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    not200 = re.search(r"^Non-200 responses: (\d+)", done.stdout, re.MULTILINE)
    if not answered or not not200:
        raise BenchError(f"cannot parse wrk's output:\n{done.stdout}")
    return int(answered[1]), int(not200[1])


def _request(port: int, method: str, path: str, body: str | None = None,
             headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    conn.request(method, path, body, headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def _cookies(response: http.client.HTTPResponse) -> dict[str, str]:
    found = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        found[name.strip()] = rest.split(";", 1)[0]
    return found


def web_sign_in(server: Server, email: str, password: str) -> str:
    """The dashboard's sign-in form, as a browser posts it; the Cookie header it earns."""
    conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
    conn.request("GET", "/signin")
    page = conn.getresponse()
    text = page.read().decode()
    conn.close()
    token = re.search(r'name="csrf_token" value="([^"]+)"', text)
    cookies = _cookies(page)
    if page.status != 200 or not token or "appliance_csrf" not in cookies:
        raise BenchError(f"GET /signin answered {page.status} without a CSRF token")
    body = urllib.parse.urlencode({"email": email, "password": password,
                                   "csrf_token": token[1]})
    signed = _request(server.port, "POST", "/signin", body, {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"appliance_csrf={cookies['appliance_csrf']}"})
    cookies |= _cookies(signed)
    if signed.status != 302 or "appliance_session" not in cookies:
        raise BenchError(f"POST /signin answered {signed.status} without a session cookie")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def _get_ok(server: Server, path: str, cookie: str) -> None:
    answer = _request(server.port, "GET", path, headers={"Cookie": cookie})
    if answer.status != 200:
        raise BenchError(f"GET {path} with the session cookie answered {answer.status}")


def measure_workload(work: Path) -> dict[str, Any]:
    """The standard workload on a fresh server, then the steady one; RSS after each."""
    with running(start_appliance(work, "footprint", LOADED_SETTINGS)) as server:
        wait_healthy(server)
        time.sleep(1)
        metrics: dict[str, Any] = {"rss_fresh_mb": rss_mb(server.pid)}
        password = secrets.token_urlsafe(18)
        status, body = call_json(server.port, "POST", "/api/v1/auth/signup",
                                 {"email": "signup@example.com", "password": password})
        if status != 201:
            raise BenchError(f"POST /api/v1/auth/signup answered {status}: {body}")
        create_account(server, password)
        token = sign_in(server, password)
        auth = {"Authorization": f"Bearer {token}"}
        _, listed = call_json(server.port, "GET", "/api/v1/projects", token=token)
        project = next(p["id"] for p in listed["data"] if p["is_default"])
        status, made = call_json(server.port, "POST", "/api/v1/api-keys",
                                 {"name": "footprint", "scopes": ["instances:read"],
                                  "rate_limit_rpm": common.BENCH_KEY_RPM}, token)
        if status != 201:
            raise BenchError(f"POST /api/v1/api-keys answered {status}: {made}")
        key = {"X-API-Key": made["secret"]}
        cookie = web_sign_in(server, BENCH_EMAIL, password)
        for page in PAGES:
            _get_ok(server, page.format(p=project), cookie)
        _get_ok(server, "/docs/api", cookie)
        requests = [("/api/v1/auth/me", auth), (f"/api/v1/projects/{project}", auth),
                    (f"/api/v1/projects/{project}/instances", key), ("/api/v1/projects", auth),
                    (f"/api/v1/projects/{project}/jobs", key)]
        answered, wrong = run_workload(server, work, "workload", WORKLOAD_REQUESTS, requests)
        time.sleep(1)
        metrics["rss_workload_mb"] = rss_mb(server.pid)
        print(f"  after signup, sign-ins, {len(PAGES)} pages, /docs/api and {answered:,} "
              f"API requests: RSS {metrics['rss_workload_mb']:.1f} MB "
              f"(fresh {metrics['rss_fresh_mb']:.1f} MB)", flush=True)
        more, wrong_more = run_workload(server, work, "steady", STEADY_REQUESTS, requests)
        time.sleep(1)
        metrics["rss_steady_mb"] = rss_mb(server.pid)
        print(f"  after {more:,} more: RSS {metrics['rss_steady_mb']:.1f} MB", flush=True)
        metrics["rss_growth"] = metrics["rss_steady_mb"] / metrics["rss_workload_mb"] - 1
        metrics["workload_requests"] = answered + more
        metrics["workload_non_200"] = wrong + wrong_more
    return metrics


# --- the dashboard with a seeded account -----------------------------------------------

SEED_CODE = ("import sys; sys.path.insert(0, sys.argv[1]); from benchmarks import footprint; "
             "footprint.seed_in_this_process(sys.argv[2], sys.argv[3], sys.argv[4])")


def seed_in_this_process(data_dir: str, email: str, result_path: str) -> None:
    """Give the account `email` its instances, usage, ledger and webhook deliveries."""
    from appliance import create_app
    from appliance.db import database
    from appliance.models import (
        Event,
        Instance,
        UsageDaily,
        UsageRecord,
        User,
        WebhookDelivery,
    )
    from appliance.services import clock
    from appliance.services.billing import ledger
    from appliance.services.ids import new_id
    from appliance.services.principal import Principal
    from appliance.services.webhooks import endpoints
    from benchmarks.seed import bench_plan, seed_instances

    app = create_app({"DATA_DIR": data_dir}, offer_setup=False)
    with app.app_context():
        owner = User.get(User.email == email)
        project_id, _ = seed_instances(owner, bench_plan())
        instances = list(Instance.select(Instance.id, Instance.name)
                         .where(Instance.project == project_id).limit(USAGE_INSTANCES))
        now = clock.now().replace(minute=0, second=0, microsecond=0)
        records, daily = [], {}
        for hours_ago in range(USAGE_DAYS * 24, 0, -1):
            hour = now - dt.timedelta(hours=hours_ago)
            for instance in instances:
                records.append({"user": owner.id, "project": project_id,
                                "subject_id": instance.id, "subject_name": instance.name,
                                "resource": "instance", "sku": "bench-small", "hour": hour,
                                "quantity": 1, "unit_price": 1, "amount": 1,
                                "created_at": hour})
            day = hour.strftime("%Y-%m-%d")
            daily[day] = daily.get(day, 0) + len(instances)
        with database.atomic():
            common.insert_all(UsageRecord, records)
            common.insert_all(UsageDaily, [
                {"user": owner.id, "project": project_id, "day": day, "resource": "instance",
                 "sku": "bench-small", "quantity": total, "amount": total}
                for day, total in daily.items()])
        for index in range(LEDGER_ENTRIES):
            ledger.post(owner.id, "grant" if index % 2 == 0 else "usage",
                        500 if index % 2 == 0 else -100, f"bench:{index}",
                        note=f"bench entry {index}")
        webhook = endpoints.create_webhook(Principal(owner, None, "session"),
                                           "https://93.184.215.14/bench").webhook
        events, deliveries = [], []
        for index in range(WEBHOOK_DELIVERIES):
            at = clock.now() - dt.timedelta(minutes=index)
            event_id = new_id("evt")
            events.append({"id": event_id, "type": "api_key.created", "user": owner.id,
                           "data": "{}", "created_at": at})
            deliveries.append({"id": new_id("dlv"), "webhook": webhook.id, "event": event_id,
                               "msg_id": new_id("msg"), "status": "succeeded",
                               "attempts": 1, "last_status_code": 200, "created_at": at,
                               "finished_at": at})
        with database.atomic():
            common.insert_all(Event, events)
            common.insert_all(WebhookDelivery, deliveries)
        instance_id = instances[0].id
    Path(result_path).write_text(json.dumps({"project_id": project_id,
                                             "instance_id": instance_id}))


def seed_dashboard(server: Server, work: Path) -> dict[str, str]:
    result = work / "dashboard-seed.json"
    argv = [sys.executable, "-c", SEED_CODE, str(SCRIPTS_DIR), str(server.data_dir),
            BENCH_EMAIL, str(result)]
    done = subprocess.run(argv, capture_output=True, text=True, env=server_env(),
                          timeout=SEED_TIMEOUT_S, check=False, cwd=server.log_path.parent)
    if done.returncode != 0:
        raise BenchError(f"the dashboard seed failed:\n{done.stdout}{done.stderr}")
    return json.loads(result.read_text())


def measure_dashboard(work: Path, duration: int, rounds: int, warmup: int,
                      ) -> dict[str, Any]:
    """Each of DASHBOARD_PAGES on one connection (p99) and on CONNECTIONS (req/s),
    alternating with the baseline's health."""
    metrics: dict[str, Any] = {}
    with (running(start_appliance(work, "dashboard", LOADED_SETTINGS)) as server,
          running(start_baseline(work)) as baseline):
        wait_healthy(server)
        wait_healthy(baseline)
        password = secrets.token_urlsafe(18)
        create_account(server, password)
        seeded = seed_dashboard(server, work)
        cookie = web_sign_in(server, BENCH_EMAIL, password)
        script = work / "dashboard-non200.lua"
        script.write_text(NON_200_LUA)
        endpoints = []
        for label, page in DASHBOARD_PAGES:
            path = page.format(p=seeded["project_id"], i=seeded["instance_id"])
            _get_ok(server, path, cookie)
            endpoints.append(Endpoint(label.replace(" ", "_"), path,
                                      ("-H", f"Cookie: {cookie}", "-s", str(script)),
                                      label=label))
        print(f"dashboard pages, seeded account ({USAGE_DAYS} days of usage, "
              f"{LEDGER_ENTRIES} ledger entries, {WEBHOOK_DELIVERIES} deliveries); "
              f"wrk -c1 (p99) and -c{CONNECTIONS} (req/s), {rounds} rounds:", flush=True)
        if warmup > 0:
            run_wrk(baseline.port, warmup)
            for endpoint in endpoints:
                run_wrk(server.port, warmup, endpoint)
        baseline_rps, samples = [], {e.name: {"rps": [], "p99": [], "wrong": 0}
                                     for e in endpoints}
        for round_no in range(1, rounds + 1):
            baseline_rps.append(load(baseline, duration, round_no).requests_per_s)
            for endpoint in endpoints:
                single = Endpoint(endpoint.name, endpoint.path,
                                  endpoint.wrk_options, endpoint.label + " (1 conn)")
                one = load_one_connection(server, duration, round_no, single)
                many = load(server, duration, round_no, endpoint)
                entry = samples[endpoint.name]
                entry["p99"].append(one.p99_ms)
                entry["rps"].append(many.requests_per_s)
                entry["wrong"] += (one.non_200 + many.non_200 + one.socket_errors
                                   + many.socket_errors)
        metrics["dashboard_baseline_requests_per_s"] = statistics.median(baseline_rps)
        for name, entry in samples.items():
            metrics[f"page_{name}_requests_per_s"] = statistics.median(entry["rps"])
            metrics[f"page_{name}_ratio"] = (statistics.median(entry["rps"])
                                             / metrics["dashboard_baseline_requests_per_s"])
            metrics[f"page_{name}_p99_ms"] = statistics.median(entry["p99"])
            metrics[f"page_{name}_errors"] = entry["wrong"]
    return metrics


def load_one_connection(server: Server, duration: int, round_no: int,
                        endpoint: Endpoint) -> Any:
    """`load` with one connection (wrk -c1) instead of CONNECTIONS."""
    from benchmarks import wrk

    saved = wrk.CONNECTIONS
    wrk.CONNECTIONS = 1
    try:
        return load(server, duration, round_no, endpoint)
    finally:
        wrk.CONNECTIONS = saved


def measure(work: Path, duration: int, rounds: int, warmup: int) -> dict[str, Any]:
    print("footprint: RSS after the standard workload and after "
          f"{STEADY_REQUESTS:,} more requests:", flush=True)
    metrics = measure_workload(work)
    metrics.update(measure_dashboard(work, duration, rounds, warmup))
    return metrics


def rows(m: dict[str, Any], strict: bool = False) -> list[Row]:
    if "rss_workload_mb" not in m:
        return []
    found = [
        Row("RSS fresh / after the standard workload",
            f"{m['rss_fresh_mb']:.1f} / {m['rss_workload_mb']:.1f} MB",
            f"< {TARGET_WORKLOAD_RSS_MB:.0f} MB",
            m["rss_workload_mb"] < TARGET_WORKLOAD_RSS_MB and m["workload_non_200"] == 0),
        Row(f"RSS after {STEADY_REQUESTS:,} more requests",
            f"{m['rss_steady_mb']:.1f} MB ({m['rss_growth'] * 100:+.1f} %)",
            f"< +{TARGET_GROWTH * 100:.0f} %", m["rss_growth"] < TARGET_GROWTH),
        Row("workload answers not 200", f"{m['workload_non_200']:.0f}", "0",
            m["workload_non_200"] == 0),
        Row("dashboard baseline health req/s",
            f"{m['dashboard_baseline_requests_per_s']:.1f}", "-", None),
    ]
    for label, _ in DASHBOARD_PAGES:
        name = label.replace(" ", "_")
        errors = m[f"page_{name}_errors"]
        found += [
            Row(f"page {label} req/s (ratio)",
                f"{m[f'page_{name}_requests_per_s']:.1f} ({m[f'page_{name}_ratio']:.3f})",
                f">= {TARGET_PAGE_RATIO}",
                m[f"page_{name}_ratio"] >= TARGET_PAGE_RATIO and errors == 0),
            Row(f"page {label} p99 @ 1 conn", f"{m[f'page_{name}_p99_ms']:.1f} ms",
                f"< {TARGET_PAGE_P99_MS:.0f} ms",
                m[f"page_{name}_p99_ms"] < TARGET_PAGE_P99_MS and errors == 0),
        ]
    return found


TARGETS = {"rss_workload_mb_max": TARGET_WORKLOAD_RSS_MB, "rss_growth_max": TARGET_GROWTH,
           "page_p99_ms_max": TARGET_PAGE_P99_MS, "page_ratio_min": TARGET_PAGE_RATIO}
