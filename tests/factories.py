"""Factories for tests: users and signed-in API clients on the real app."""

from __future__ import annotations

import re

from appliance.models import MailOutbox
from appliance.services import accounts

PASSWORD = "correct horse battery staple"


def make_user(app, email: str = "owner@example.test", password: str = PASSWORD, *,
              role: str = "user", verified: bool = True, display_name: str = ""):
    with app.app_context():
        return accounts.create_user(email, password, display_name, role=role, verified=verified)


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
