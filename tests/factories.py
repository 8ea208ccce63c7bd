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
