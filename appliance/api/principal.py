"""Who is calling the JSON API, and how fast they may call it.

A caller authenticates with `Authorization: Bearer <access token>`, or with an API key
as `Authorization: Bearer sk_...` or `X-API-Key: sk_...` on the operations that accept
keys. A request carries one credential: `Authorization` and `X-API-Key` together are
refused (401), whatever either holds. Each authenticated request is counted against the
caller's rate limit; the resulting `RateLimit` headers are added to the response, error
or not.
"""

from __future__ import annotations

from dataclasses import replace

from flask import Response, g, request

from appliance.errors import Forbidden, Unauthorized
from appliance.http import client_ip
from appliance.services.accounts import api_keys, sessions
from appliance.services.limits import ratelimit
from appliance.services.ops import dashboard_metrics
from appliance.services.principal import Principal

# The `auth=` of an operation: who may call it.
USER = ("bearer",)  # a signed-in user's access token
USER_OR_KEY = ("bearer", "api_key")  # ... or an API key


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _one_credential() -> None:
    """401 when a request carries both headers: never pick one and ignore the other."""
    if "Authorization" in request.headers and "X-API-Key" in request.headers:
        raise Unauthorized("Send one credential: Authorization or X-API-Key, not both.",
                           code="multiple_credentials",
                           headers={"WWW-Authenticate": 'Bearer realm="appliance"'})


def _key_secret(token: str | None) -> str | None:
    header = request.headers.get("X-API-Key", "").strip()
    if header:
        return header
    if token is not None and api_keys.looks_like_key(token):
        return token
    return None


def resolve_principal(accept_keys: bool = False) -> Principal:
    """The caller of this request, or 401 (with WWW-Authenticate) when there is none.

    API keys are refused (403 `api_key_not_allowed`) where `accept_keys` is false: signing
    in, passwords, MFA and sessions need the person, not a key.
    """
    principal = g.get("principal")
    if principal is not None:
        return principal
    _one_credential()
    token = bearer_token()
    secret = _key_secret(token)
    if secret is not None:
        if not accept_keys:
            raise Forbidden("API keys cannot be used here; sign in with your password.",
                            code="api_key_not_allowed")
        principal, key = api_keys.authenticate(secret, client_ip())
        quota = ratelimit.for_principal(principal, key.rate_limit_rpm)
    elif token is not None:
        principal = sessions.principal_from_access_token(token)
        quota = ratelimit.for_principal(principal)
    else:
        raise Unauthorized("Sign in: send Authorization: Bearer <access token or API key>.",
                           headers={"WWW-Authenticate": 'Bearer realm="appliance"'})
    principal = replace(principal, ip=client_ip())
    g.principal, g.rate_quota = principal, quota
    return principal


def limit_auth_ip() -> None:
    """Count a request to a sign-in/signup/recovery endpoint against the address's limit."""
    g.rate_quota = ratelimit.for_auth_ip(client_ip())


def add_rate_headers(response: Response) -> Response:
    """after_request: the caller's quota on every limited route."""
    quota = g.get("rate_quota")
    if quota is not None:
        for name, value in quota.headers().items():
            response.headers[name] = value
    return response


def count_api_request(response: Response) -> Response:
    """after_request: count an API request made with a key or an access token for the
    caller's dashboard metrics (in memory; the `sample_metrics` task writes the counts).
    The dashboard's own requests by its session cookie are not counted."""
    principal = g.get("principal")
    if principal is not None and g.get("rate_quota") is not None:
        dashboard_metrics.count_call(principal)
    return response
