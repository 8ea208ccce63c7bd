"""schemathesis' own CLI (`st run`) against a real `appliance serve`, as an API user runs it:
the served /api/v1/openapi.json, an API key with every scope in `Authorization`, and a
`schemathesis.toml` naming a few real ids. The run fails on any server error (5xx) or on
a response that does not match the document (schema, content type, status).

What it covers that the in-process fuzz test (tests/test_fuzz.py) does not:

- the served stack: waitress, the WSGI app started by `appliance serve` with its
  scheduler and job runner in their own threads, real sockets and HTTP parsing (chunked
  and malformed requests, header encodings), settings read from the environment;
- the document as a client fetches it over HTTP, and schemathesis' CLI defaults (its
  coverage phase's boundary and negative cases, its CLI-side checks and reporting);
- authentication by API key (every scope, project-less), which the fuzz test never uses:
  it signs in an administrator with a bearer token;
- Stripe configured (top-ups go to a local stand-in for Stripe's API, the webhook checks
  signatures), where the fuzz test leaves Stripe unconfigured (503).

What it leaves to tests/test_fuzz.py: the operations only a signed-in person may call
(sign-in, sessions, passwords, MFA: an API key gets 403 there), known bodies (real
passwords, addresses, ssh keys), the stricter `status_code_listed` check, and the
stateful checks. Only the coverage and fuzzing phases run, with few examples per
operation (`MAX_EXAMPLES`), deterministically: about 1-2 minutes on 2 cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from appliance import create_app
from appliance.services.accounts.sessions import SCOPES
from tests.conftest import Server
from tests.factories import bearer, create_key, fake_catalog, login, make_user
from tests.test_stripe_topup import WEBHOOK_SECRET, StripeStandIn

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
ADMIN = "st-admin@example.test"
OTHER = "st-other@example.test"
MAX_EXAMPLES = 5  # generated cases per operation and phase; coverage cases come on top
# Server errors and disagreements with the document; the other checks need knowledge the
# document cannot carry (see tests/test_fuzz.py's comments on what it leaves out).
CHECKS = ("not_a_server_error", "response_schema_conformance", "content_type_conformance",
          "status_code_conformance", "response_headers_conformance")
# Generous limits: this run checks answers, not the rate limiter (429s hide the rest).
NO_RATE_LIMITS = {f"APPLIANCE_RATE_LIMIT_{name}_PER_MINUTE": "1000000"
                  for name in ("KEY", "USER", "AUTH")}


def _prepare(data_dir: Path) -> tuple[str, dict[str, str]]:
    """An administrator with an all-scope API key, another user (whom the run may suspend,
    demote or delete, unlike the key's owner), and a simulated node with plans."""
    app = create_app({"DATA_DIR": str(data_dir)})
    make_user(app, ADMIN, role="admin", display_name="Schemathesis")
    other = make_user(app, OTHER, display_name="Other")
    client = app.test_client()
    auth = bearer(login(client, ADMIN))
    catalog = fake_catalog(app)
    secret, key = create_key(client, auth, scopes=list(SCOPES), name="schemathesis")
    return secret, {**catalog, "user": other.id}


def _known_ids(server: Server, headers: dict[str, str], catalog: dict[str, str]) -> dict:
    """Real ids, made through the served API, for the path parameters of `st run`."""
    def call(method: str, path: str, **kwargs) -> dict:
        response = requests.request(method, f"{server.url}/api/v1{path}", headers=headers,
                                    timeout=30, **kwargs)
        assert response.ok, (method, path, response.status_code, response.text)
        return response.json()

    project = next(p for p in call("GET", "/projects")["data"] if p["is_default"])
    instance = call("POST", f"/projects/{project['id']}/instances",
                    json={"name": "web-1", "plan_id": catalog["plan"],
                          "image_id": catalog["image"]})["instance"]
    # Not the key's own id: a generated DELETE /api-keys/{key_id} would end the run's access.
    return {"user_id": catalog["user"], "project_id": project["id"],
            "instance_id": instance["id"], "plan_id": "pln_small",
            "image_id": catalog["image"], "node_id": catalog["node"]}


def _config(known: dict[str, str]) -> str:
    """schemathesis.toml: each known id is drawn for its path parameter 3 times in 4."""
    lines = []
    for name, value in known.items():
        lines += [f"[dictionaries.{name}]", f'values = ["{value}"]', ""]
    lines.append("[parameters]")
    lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.75 }}'
              for name in known]
    return "\n".join(lines) + "\n"


@pytest.fixture
def served(tmp_path):
    stripe = StripeStandIn()
    data_dir = tmp_path / "data"
    secret, catalog = _prepare(data_dir)
    env = {"APPLIANCE_DATA_DIR": str(data_dir), **NO_RATE_LIMITS,
           "APPLIANCE_STRIPE_SECRET_KEY": "sk_test_schemathesis",
           "APPLIANCE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "APPLIANCE_STRIPE_API_BASE": stripe.url}
    server = Server([sys.executable, "-m", "appliance"], tmp_path, env)
    try:
        server.wait()
        yield server, secret, catalog
    finally:
        output = server.stop()
        stripe.close()
        (tmp_path / "server.log").write_text(output)


def test_the_served_api_answers_schemathesis_without_server_errors(served, tmp_path):
    server, secret, catalog = served
    headers = {"Authorization": f"Bearer {secret}"}
    run_dir = tmp_path / "st"
    run_dir.mkdir()
    (run_dir / "schemathesis.toml").write_text(_config(_known_ids(server, headers, catalog)))
    assert ST.exists(), f"{ST} is missing: install the test extras (scripts/test does)"
    result = subprocess.run(
        [str(ST), "run", f"{server.url}/api/v1/openapi.json",
         "--header", f"Authorization: Bearer {secret}",
         "--checks", ",".join(CHECKS), "--phases", "coverage,fuzzing",
         "--max-examples", str(MAX_EXAMPLES), "--workers", "2", "--seed", "20261203",
         "--generation-deterministic", "--no-color", "--request-timeout", "30",
         "--warnings", "off", "--report", "junit", "--report-dir", str(run_dir / "report")],
        cwd=run_dir, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")})
    output = result.stdout + result.stderr
    summary = output[output.rfind("SUMMARY"):] if "SUMMARY" in output else output[-5000:]
    assert result.returncode == 0, output[-20000:]
    tested = re.search(r"Tested: (\d+)", summary)
    assert tested and int(tested.group(1)) > 100, summary
