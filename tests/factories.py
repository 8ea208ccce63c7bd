"""Factories for tests: users and signed-in clients on the real app, and catalog rows.

- Users and the JSON API: `make_user`, `login` / `signed_in` (bearer headers), `api`,
  projects, members and keys made through the API as a client would.
- The dashboard through the test client: `sign_in` posts the /signin form with its CSRF
  token; `Browser` is one signed-in dashboard user (the real browser is tests/browser.py).
- Rows: `make_plan`, `make_node`, `make_image`, `make_instance` write the models directly
  (or through public service functions), never through a service's private helpers; call
  them inside `app.app_context()`. `fake_catalog` sets up a simulated node and two plans.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

from appliance.drivers import fake
from appliance.models import Image, Instance, MailOutbox, Node, Plan, Project, User
from appliance.services import clock
from appliance.services.accounts import users
from appliance.services.ids import new_id
from appliance.services.instances import nodes

PASSWORD = "correct horse battery staple"
# A fixed instant the billing, metering and dashboard tests freeze the clock at.
T0 = dt.datetime(2025, 3, 10, 12, 30, tzinfo=dt.UTC)
# Markup a user may type as a name; pages must show it escaped.
EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


# Users and the JSON API --------------------------------------------------------------


def make_user(app, email: str = "owner@example.test", password: str = PASSWORD, *,
              role: str = "user", verified: bool = True, display_name: str = ""):
    with app.app_context():
        return users.create_user(email, password, display_name, role=role, verified=verified)


def login(client, email: str, password: str = PASSWORD) -> dict:
    response = client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def bearer(tokens: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def signed_in(client, email: str, password: str = PASSWORD) -> dict[str, str]:
    """The bearer headers of an existing user, signed in through POST /auth/login."""
    return bearer(login(client, email, password))


def last_mail(app, to: str) -> MailOutbox:
    with app.app_context():
        return (MailOutbox.select().where(MailOutbox.to_addr == to)
                .order_by(MailOutbox.created_at.desc(), MailOutbox.id.desc()).first())


def token_from_mail(app, to: str, path: str) -> str:
    mail = last_mail(app, to)
    assert mail is not None, f"no mail to {to}"
    match = re.search(re.escape(path) + r"\?token=([A-Za-z0-9_\-]+)", mail.body)
    assert match, mail.body
    return match.group(1)


def api(client, method: str, path: str, headers: dict[str, str], **kwargs):
    """One JSON API call: `api(client, "POST", "/projects", auth, json={...})`."""
    return client.open("/api/v1" + path, method=method, headers=headers, **kwargs)


def default_project(client, headers: dict[str, str]) -> str:
    listed = api(client, "GET", "/projects", headers).get_json()["data"]
    return next(p["id"] for p in listed if p["is_default"])


def create_project(client, headers: dict[str, str], name: str = "Lab") -> str:
    response = api(client, "POST", "/projects", headers, json={"name": name})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def add_member(client, headers: dict[str, str], project_id: str, email: str, role: str) -> None:
    response = api(client, "POST", f"/projects/{project_id}/members", headers,
                   json={"email": email, "role": role})
    assert response.status_code == 201, response.get_json()


def create_key(client, headers: dict[str, str], scopes: list[str] | None = None,
               **fields) -> tuple[str, dict]:
    """An API key of the signed-in user: (secret, key as listed)."""
    body = {"name": fields.pop("name", "test key"),
            "scopes": scopes or ["instances:read", "projects:write", "keys:write"], **fields}
    response = api(client, "POST", "/api-keys", headers, json=body)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    return created["secret"], created["key"]


def key_auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


# The dashboard through the test client -----------------------------------------------

HTML = {"Accept": "text/html"}


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client, email: str = "ada@example.test", password: str = PASSWORD,
            next_url: str | None = None):
    """Post the dashboard's /signin form (with the CSRF token of its page); the response."""
    page = client.get("/signin").get_data(as_text=True)
    form = {"email": email, "password": password, "csrf_token": csrf_from(page)}
    if next_url:
        form["next"] = next_url
    return client.post("/signin", data=form)


class Browser:
    """One signed-in dashboard user: get pages and post forms with the CSRF token."""

    def __init__(self, app, email: str) -> None:
        self.client = app.test_client()
        assert sign_in(self.client, email).status_code == 302
        self.token = csrf_from(self.client.get("/account").get_data(as_text=True))

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers={**HTML, **kwargs.pop("headers", {})}, **kwargs)

    def page(self, path: str) -> str:
        response = self.get(path)
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        return response.get_data(as_text=True)

    def post(self, path: str, data: dict | None = None, headers: dict | None = None, *,
             follow: bool = False):
        """Post a form; `follow` follows its redirect (a form that made something lands on
        the page that shows it: post/redirect/get)."""
        return self.client.post(path, data={**(data or {}), "csrf_token": self.token},
                                headers={**HTML, **(headers or {})}, follow_redirects=follow)


def default_project_id(app, email: str) -> str:
    """The id of the default project of the user `email`."""
    with app.app_context():
        return (Project.select().join(User, on=(Project.created_by == User.id))
                .where(User.email == email, Project.is_default).get().id)


def add_member_by_form(browser: Browser, project_id: str, email: str, role: str = "member"):
    """Add `email` to the project with the dashboard's members form; the response."""
    return browser.post(f"/projects/{project_id}/members", {"email": email, "role": role})


def error_next_to(page: str, field_id: str) -> str:
    """The error text rendered under the field with this id."""
    match = re.search(rf'<p class="error-text" id="e-{re.escape(field_id)}">([^<]*)</p>', page)
    assert match, f"no error under #{field_id}"
    return match.group(1)


# Rows: plans, nodes, images, instances (inside an app context) -------------------------


def make_plan(slug: str = "std", price: int = 100, cap: int = 50_000, *, vcpus: int = 1,
              memory_mb: int = 512, disk_gb: int = 10) -> Plan:
    """An active plan `pln_<slug>` named after its slug, priced per hour and capped per
    month (minor units)."""
    now = clock.now()
    return Plan.create(id=f"pln_{slug}", slug=slug, name=slug.title(), vcpus=vcpus,
                       memory_mb=memory_mb, disk_gb=disk_gb, price_hourly=price,
                       price_monthly_cap=cap, created_at=now, updated_at=now)


def make_node(name: str | None = None, *, engine: str = "fake", endpoint: str = "",
              capacity: nodes.Capacity = nodes.Capacity(10**6, 10**9, 10**9),  # noqa: B008
              check: bool = False) -> Node:
    """An enabled node, written directly: no administrator and no audit record needed.

    Without `check` the engine is never asked and the node is recorded healthy (the rows
    metering and billing need). With `check` it is asked at once (`nodes.check_health`),
    which records its health and discovers its images, as registering a node does.
    """
    now = clock.now()
    node = Node.create(id=new_id("node"), name=name or new_id("n"), engine=engine,
                       endpoint=endpoint, options="{}", capacity_vcpus=capacity.vcpus,
                       capacity_memory_mb=capacity.memory_mb,
                       capacity_disk_gb=capacity.disk_gb, enabled=True,
                       simulated=engine == "fake", health="unknown" if check else "healthy",
                       created_at=now, updated_at=now)
    return nodes.check_health(node) if check else node


def make_image(node: Node, ref: str | None = None, *, name: str = "debian") -> Image:
    """An image registered on `node` (a unique made-up engine reference by default)."""
    now = clock.now()
    return Image.create(id=new_id("img"), name=name, engine=node.engine,
                        ref=ref or new_id("ref"), node=node, created_at=now, updated_at=now)


def default_project_of(user_id: str) -> Project:
    return Project.get(Project.created_by == user_id, Project.is_default)


def make_instance(project: Project | str, plan: Plan | str, node: Node, image: Image, *,
                  created_at: dt.datetime | None = None, status: str = "running",
                  name: str | None = None) -> Instance:
    """An instance row as if its create job had run (no engine is asked)."""
    at = created_at or clock.now()
    return Instance.create(id=new_id("ins"), project=project, name=name or new_id("i")[4:],
                           plan=plan, image=image, node=node, status=status,
                           driver_ref="ref", created_at=at, updated_at=at)


def delete_instance(instance: Instance, at: dt.datetime) -> None:
    Instance.update(status="deleted", deleted_at=at).where(Instance.id == instance.id).execute()


def fake_catalog(app, endpoint: str = "fake://tests", memory_mb: int = 65536) -> dict[str, str]:
    """A healthy simulated node and the plans "small" and "large", as an operator would
    set them up; the node's images are the fake engine's, discovered by its health check."""
    fake.forget_all()
    with app.app_context():
        make_plan("small", price=1, cap=500)
        make_plan("large", price=4, cap=2000, vcpus=2, memory_mb=2048, disk_gb=20)
        node = make_node("fake", endpoint=endpoint, capacity=nodes.Capacity(64, memory_mb, 1000),
                         check=True)
        image = Image.get(Image.node == node.id, Image.ref == "fake/debian-12")
        other = Image.get(Image.node == node.id, Image.ref == "fake/alpine-3")
    return {"plan": "small", "large_plan": "large", "image": image.id, "other_image": other.id,
            "node": node.id}


def run_jobs(app) -> int:
    from appliance.services.instances import jobs

    with app.app_context():
        return jobs.run_pending()


def create_instance(app, client, headers: dict[str, str], project_id: str,
                    catalog: dict[str, str], *, name: str = "web-1", run: bool = True) -> dict:
    response = api(client, "POST", f"/projects/{project_id}/instances", headers,
                   json={"name": name, "plan_id": catalog["plan"], "image_id": catalog["image"]})
    assert response.status_code == 202, response.get_json()
    if run:
        run_jobs(app)
    return response.get_json()["instance"]


# Waiting -----------------------------------------------------------------------------


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll `condition` until it returns something truthy and return that; fail after
    `timeout` seconds. For what runs on its own clock (a served process, a browser);
    in-process work is driven by moving `services.clock` instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")
