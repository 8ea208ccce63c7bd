"""Who is calling the JSON API: resolved from `Authorization: Bearer ...`."""

from __future__ import annotations

from flask import g, request

from appliance.errors import Unauthorized
from appliance.services import sessions
from appliance.services.sessions import Principal


def client_ip() -> str:
    return request.remote_addr or ""


def user_agent() -> str:
    return request.headers.get("User-Agent", "")[:300]


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def resolve_principal() -> Principal:
    """The caller of this request, or 401 (with WWW-Authenticate) when there is none."""
    principal = g.get("principal")
    if principal is not None:
        return principal
    token = bearer_token()
    if token is None:
        raise Unauthorized("Sign in: send Authorization: Bearer <access token>.",
                           headers={"WWW-Authenticate": 'Bearer realm="appliance"'})
    principal = g.principal = sessions.principal_from_access_token(token)
    return principal
