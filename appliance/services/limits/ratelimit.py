"""Request rate limits: per API key, per signed-in user, and per IP on auth endpoints.

A sliding 60-second window per subject, counted in `throttle`'s store (in this process;
a shared store can replace it). Every limited request learns its `Quota`, which the API
turns into `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers);
going over raises 429 `rate_limited` with `Retry-After`.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance import config
from appliance.errors import RateLimited
from appliance.services.limits import throttle
from appliance.services.principal import Principal

WINDOW = 60


@dataclass(frozen=True)
class Quota:
    policy: str  # key | user | auth
    limit: int
    remaining: int
    reset: int  # seconds until a request slot frees up

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Policy": f'"{self.policy}";q={self.limit};w={WINDOW}',
                "RateLimit": f'"{self.policy}";r={self.remaining};t={self.reset}'}


def _take(policy: str, subject: str, limit: int, message: str) -> Quota:
    taken, count, reset = throttle.take(f"rate:{policy}:{subject}", limit, WINDOW)
    quota = Quota(policy, limit, max(0, limit - count), max(1, int(reset + 0.999)))
    if not taken:
        raise RateLimited(quota.reset, message, headers=quota.headers(),
                          details={"policy": policy, "limit": limit, "window_seconds": WINDOW})
    return quota


def for_principal(principal: Principal, key_limit: int | None = None) -> Quota:
    """Count one API request of `principal` (a key's own limit, else the defaults)."""
    settings = config.active()
    if principal.key_id is not None:
        limit = key_limit or settings["RATE_LIMIT_KEY_PER_MINUTE"]
        return _take("key", principal.key_id, limit,
                     f"This API key is limited to {limit} requests per minute.")
    limit = settings["RATE_LIMIT_USER_PER_MINUTE"]
    return _take("user", principal.user.id, limit,
                 f"You are limited to {limit} API requests per minute.")


def for_auth_ip(ip: str) -> Quota:
    """Count one request to a sign-in, signup or recovery endpoint from `ip`."""
    limit = config.active()["RATE_LIMIT_AUTH_PER_MINUTE"]
    return _take("auth", ip or "unknown", limit,
                 f"Too many requests to sign-in endpoints from your address; at most {limit} "
                 "per minute.")
