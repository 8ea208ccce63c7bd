"""A Python client generated from the served OpenAPI document works, as an API user would
use it: `openapi-python-client generate --url .../api/v1/openapi.json` (the CLI from the
test extras) against a real `appliance serve`, then the generated package signs up,
confirms the address, signs in and lists projects.

The generator must warn about nothing but the binary (PDF/CSV) response bodies it cannot
type: any other warning means an operation or a response type is missing from the
client, as happened when two schema classes shared a name.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.factories import PASSWORD, token_from_mail

pytestmark = pytest.mark.slow

PACKAGE = "appliance_api_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")
# The only warnings allowed: a binary body has no JSON schema to type it with.
BINARY_BODY = re.compile(r"Unsupported content_type (application/pdf|text/csv)")


def _warnings(output: str) -> list[str]:
    """The generator's warning blocks (each starts with WARNING or "Unable to parse")."""
    blocks = re.split(r"\n(?=WARNING |Unable to parse )", output)
    return [block.strip() for block in blocks
            if block.startswith(("WARNING ", "Unable to parse "))]


@pytest.fixture
def served(serve, make_app, data_dir):
    """A served appliance and an app on the same data directory (to read the mail outbox)."""
    app = make_app()  # runs the migrations before the server starts
    server = serve(APPLIANCE_DATA_DIR=str(data_dir))
    return server, app


@pytest.fixture
def generated(served, tmp_path, monkeypatch):
    """The generated client package, imported; and the generator's output."""
    server, _ = served
    assert GENERATOR.exists(), (
        f"{GENERATOR} is missing: install the test extras (scripts/test does)")
    out = tmp_path / "client"
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [str(GENERATOR), "generate", "--url", f"{server.url}/api/v1/openapi.json",
         "--meta", "none", "--output-path", str(out / PACKAGE)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    monkeypatch.syspath_prepend(str(out))
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]
    importlib.invalidate_caches()
    yield importlib.import_module(PACKAGE), out / PACKAGE, output
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def test_the_generator_warns_only_about_binary_bodies(generated):
    _, _, output = generated
    unexpected = [block for block in _warnings(output) if not BINARY_BODY.search(block)]
    assert unexpected == [], "\n\n".join(unexpected)


def test_every_operation_is_in_the_generated_client(generated, served):
    _, package_dir, _ = generated
    server, _ = served
    document = requests.get(f"{server.url}/api/v1/openapi.json", timeout=10).json()
    operation_ids = {op["operationId"] for item in document["paths"].values()
                     for op in item.values()}
    modules = {path.stem for path in (package_dir / "api").glob("*/*.py")}
    assert operation_ids - modules == set()
    names = sorted(document["components"]["schemas"])
    assert [name for name in names if "__" in name] == []


def test_a_generated_client_signs_up_signs_in_and_lists_projects(generated, served):
    client_package, _, _ = generated
    server, app = served
    models = importlib.import_module(f"{PACKAGE}.models")
    signup = importlib.import_module(f"{PACKAGE}.api.auth.auth_signup")
    verify = importlib.import_module(f"{PACKAGE}.api.auth.auth_verify_email")
    login = importlib.import_module(f"{PACKAGE}.api.auth.auth_login")
    me = importlib.import_module(f"{PACKAGE}.api.auth.auth_me")
    list_projects = importlib.import_module(f"{PACKAGE}.api.projects.projects_list_projects")
    email = "client@example.test"
    anonymous = client_package.Client(base_url=server.url, raise_on_unexpected_status=True)

    created = signup.sync(client=anonymous, body=models.SignupIn(
        email=email, password=PASSWORD, display_name="Generated Client"))
    assert isinstance(created, models.SignupOut), created
    assert created.verification_sent is True

    token = token_from_mail(app, email, "/verify-email")
    verified = verify.sync(client=anonymous, body=models.TokenIn(token=token))
    assert isinstance(verified, models.UserOut), verified
    assert verified.email == email

    signed_in = login.sync(client=anonymous, body=models.LoginIn(email=email,
                                                                  password=PASSWORD))
    assert isinstance(signed_in, models.LoginOut), signed_in
    assert signed_in.mfa_required is False
    assert isinstance(signed_in.access_token, str)

    user = client_package.AuthenticatedClient(base_url=server.url,
                                              token=signed_in.access_token,
                                              raise_on_unexpected_status=True)
    profile = me.sync(client=user)
    assert isinstance(profile, models.UserOut), profile
    assert profile.email == email
    assert profile.email_verified is True

    projects = list_projects.sync(client=user, limit=10)
    assert isinstance(projects, models.ProjectList), projects
    assert [project.is_default for project in projects.data] == [True]
    assert projects.page.has_more is False

    wrong = login.sync_detailed(client=anonymous, body=models.LoginIn(email=email,
                                                                       password="wrong"))
    assert wrong.status_code == 401
    assert isinstance(wrong.parsed, models.ErrorBody)
    assert json.loads(wrong.content)["error"]["code"] == "invalid_credentials"
