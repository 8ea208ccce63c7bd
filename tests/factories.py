"""Factories for tests: users and signed-in API clients on the real app."""

from __future__ import annotations

import re

from appliance.models import MailOutbox
from appliance.services.accounts import users

PASSWORD = "correct horse battery staple"


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


def fake_catalog(app, endpoint: str = "fake://tests", memory_mb: int = 65536) -> dict[str, str]:
    """A healthy simulated node and a plan, as an operator would set them up."""
    from appliance.drivers import fake
    from appliance.models import Image, Plan
    from appliance.services import clock
    from appliance.services.instances import nodes

    fake.forget_all()
    with app.app_context():
        now = clock.now()
        Plan.create(id="pln_small", slug="small", name="Small", vcpus=1, memory_mb=512,
                    disk_gb=10, price_hourly=1, price_monthly_cap=500, created_at=now,
                    updated_at=now)
        Plan.create(id="pln_large", slug="large", name="Large", vcpus=2, memory_mb=2048,
                    disk_gb=20, price_hourly=4, price_monthly_cap=2000, created_at=now,
                    updated_at=now)
        node = nodes._insert("fake", "fake", endpoint, options={}, enabled=True,
                             capacity=nodes.Capacity(64, memory_mb, 1000))
        nodes.check_health(node)
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
