"""Sign-in sessions: browser cookies, API access tokens (JWT) and refresh-token families.

Every sign-in makes one `AuthSession` row:

- kind "browser": the dashboard's cookie holds a 256-bit token whose SHA-256 is stored;
  the row carries the CSRF token; it ends after SESSION_IDLE_MINUTES without use or
  SESSION_MAX_HOURS after sign-in.
- kind "api": a refresh-token family. The client holds a 15-minute access token (JWT,
  HS256 only, with iss/aud/typ/exp/iat checked, RFC 8725) naming the session, and a
  30-day refresh token. Refreshing rotates the refresh token; presenting a rotated one
  again means it was stolen, so the whole family (the session) is revoked.

Access tokens are checked against their session on every request, so signing out or
changing the password takes effect at once, not 15 minutes later.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
from dataclasses import dataclass
from typing import Any

import jwt
from peewee import ModelSelect

from appliance import config
from appliance.db import database
from appliance.errors import Forbidden, NotFound, Unauthorized
from appliance.models import AuthSession, RefreshToken, User
from appliance.services import audit, clock, pagination
from appliance.services import settings as runtime
from appliance.services.accounts import authcache
from appliance.services.ids import hash_token, new_id, new_token
from appliance.services.principal import Principal

ACCESS_TOKEN_TTL = dt.timedelta(minutes=15)
REFRESH_TOKEN_TTL = dt.timedelta(days=30)
MFA_TOKEN_TTL = dt.timedelta(minutes=5)
JWT_ALGORITHM = "HS256"
ISSUER = "appliance"
ACCESS_AUDIENCE = "appliance-api"
MFA_AUDIENCE = "appliance-mfa"
ACCESS_TYP = "at+jwt"
MFA_TYP = "mfa+jwt"
# last_used_at is written at most this often per session, not on every request.
TOUCH_INTERVAL = dt.timedelta(seconds=60)


# What an API key may be allowed to do (DESIGN.md section 5). A session may do all of it
# that the user's roles allow.
SCOPES = (
    "instances:read", "instances:write", "instances:delete", "backups:write",
    "networks:write", "usage:read", "billing:read", "billing:write", "webhooks:read",
    "webhooks:write", "keys:write", "projects:write", "admin",
)


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    session_id: str
    user: User


def _signing_key(purpose: str) -> bytes:
    secret = config.active()["SECRET_KEY"].encode()
    return hmac.new(secret, f"appliance {purpose}".encode(), hashlib.sha256).digest()


def _encode(claims: dict, typ: str) -> str:
    return jwt.encode(claims, _signing_key(claims["aud"]), algorithm=JWT_ALGORITHM,
                      headers={"typ": typ})


def _decode(token: str, audience: str, typ: str) -> dict:
    """Verify signature, algorithm, typ, iss, aud, iat and exp against our clock."""
    try:
        decoded = jwt.decode_complete(
            token, _signing_key(audience), algorithms=[JWT_ALGORITHM], audience=audience,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "iss", "aud", "sub"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidTokenError:
        raise Unauthorized("The token is invalid.", code="invalid_token") from None
    if decoded["header"].get("typ") != typ:
        raise Unauthorized("The token is of the wrong type.", code="invalid_token")
    claims = decoded["payload"]
    _check_times(claims)
    return claims


def _check_times(claims: dict) -> None:
    now = clock.now().timestamp()
    if not isinstance(claims["exp"], int | float) or claims["exp"] <= now:
        raise Unauthorized("The token has expired.", code="token_expired")
    if not isinstance(claims["iat"], int | float) or claims["iat"] > now + 60:
        raise Unauthorized("The token is invalid.", code="invalid_token")


# Access tokens whose signature was verified, with their claims (see
# `_verified_access_claims`); cleared whole when full. Keyed by the token and the signing
# key, so a changed SECRET_KEY verifies again.
_VERIFIED_MAX = 4096
_verified: dict[tuple[str, bytes], dict] = {}
_verified_lock = threading.Lock()


def forget_verified_tokens() -> None:
    """Drop the verified-token cache (tests)."""
    with _verified_lock:
        _verified.clear()


def _access_token(session: AuthSession) -> str:
    now = int(clock.now().timestamp())
    return _encode({"iss": ISSUER, "aud": ACCESS_AUDIENCE, "sub": session.user_id,
                    "sid": session.id, "iat": now, "nbf": now,
                    "exp": now + int(ACCESS_TOKEN_TTL.total_seconds()),
                    "jti": new_token(nbytes=12)}, ACCESS_TYP)


def mfa_token(user: User) -> str:
    """A 5-minute proof that the password was right, exchanged with a TOTP code."""
    now = int(clock.now().timestamp())
    return _encode({"iss": ISSUER, "aud": MFA_AUDIENCE, "sub": user.id, "iat": now,
                    "exp": now + int(MFA_TOKEN_TTL.total_seconds()),
                    "pwc": int(user.password_changed_at.timestamp()),
                    # Unique, so each password step has its own budget of wrong codes.
                    "jti": new_token(nbytes=12)}, MFA_TYP)


def user_from_mfa_token(token: str) -> User:
    claims = _decode(token, MFA_AUDIENCE, MFA_TYP)
    user = User.get_or_none(User.id == claims["sub"])
    if user is None or int(user.password_changed_at.timestamp()) != claims.get("pwc"):
        raise Unauthorized("The sign-in has expired; sign in again.", code="invalid_token")
    return user


def _new_session(user: User, kind: str, ip: str, user_agent: str, lifetime: dt.timedelta,
                 **fields: Any) -> AuthSession:
    now = clock.now()
    return AuthSession.create(id=new_id("ses"), user=user, kind=kind, ip=ip[:64],
                              user_agent=user_agent[:300], created_at=now, last_used_at=now,
                              expires_at=now + lifetime, **fields)


def start_api_session(user: User, ip: str, user_agent: str) -> TokenPair:
    """Create a refresh-token family and return its first token pair."""
    refresh = new_token("rt_")
    with database.atomic():
        session = _new_session(user, "api", ip, user_agent, REFRESH_TOKEN_TTL)
        RefreshToken.create(session=session, token_hash=hash_token(refresh),
                            created_at=clock.now(), expires_at=session.expires_at)
    return TokenPair(_access_token(session), refresh,
                     int(ACCESS_TOKEN_TTL.total_seconds()), session.id, user)


def refresh(refresh_token: str, ip: str = "") -> TokenPair:
    """Rotate a refresh token. A rotated token presented again revokes its family."""
    now = clock.now()
    with database.atomic():
        row = (RefreshToken.select(RefreshToken, AuthSession)
               .join(AuthSession)
               .where(RefreshToken.token_hash == hash_token(refresh_token))
               .first())
        if row is None:
            raise Unauthorized("The refresh token is not valid.", code="invalid_token")
        session = row.session
        if session.revoked_at is not None or session.expires_at <= now:
            raise Unauthorized("This session has ended; sign in again.", code="session_ended")
        claimed = (RefreshToken.update(rotated_at=now)
                   .where(RefreshToken.id == row.id, RefreshToken.rotated_at.is_null())
                   .execute())
        if not claimed:
            _revoke(session, "refresh_token_reused")
            audit.record("auth.refresh_reuse", actor=session.user_id, target_type="session",
                         target_id=session.id, ip=ip, success=False)
    if not claimed:
        authcache.invalidate()
        raise Unauthorized("This refresh token was already used; the session is revoked.",
                           code="refresh_token_reused")
    new_refresh = new_token("rt_")
    with database.atomic():
        RefreshToken.create(session=session, token_hash=hash_token(new_refresh),
                            created_at=now, expires_at=session.expires_at)
        AuthSession.update(last_used_at=now, ip=ip[:64] or session.ip).where(
            AuthSession.id == session.id).execute()
    return TokenPair(_access_token(session), new_refresh,
                     int(ACCESS_TOKEN_TTL.total_seconds()), session.id,
                     User.get_by_id(session.user_id))


def max_hours() -> int:
    """SESSION_MAX_HOURS as it is now (changeable at run time: sessions started after a
    change last the new time)."""
    return int(runtime.get(config.active(), "SESSION_MAX_HOURS"))


def start_browser_session(user: User, ip: str, user_agent: str) -> tuple[AuthSession, str]:
    """Create a dashboard session; return it and the cookie value (shown only here)."""
    token = new_token()
    with database.atomic():
        session = _new_session(user, "browser", ip, user_agent,
                               dt.timedelta(hours=max_hours()),
                               token_hash=hash_token(token), csrf_token=new_token(nbytes=24))
    return session, token


def suspension_message(reason: str | None, until: dt.datetime | None = None) -> str:
    """What a suspended user is told, with the administrator's reason when there is one
    and when the suspension ends, when it does by itself."""
    reason = (reason or "").strip()
    text = f"This account is suspended. Reason: {reason}" if reason else \
        "This account is suspended."
    if until is not None:
        text += f" It ends on {until:%Y-%m-%d at %H:%M} UTC."
    return text


def require_active(user: User) -> User:
    """The user, or 403 account_suspended when suspended: the message and `details.reason`
    carry the reason the administrator gave (it is meant for the user)."""
    if user.status == "suspended":
        until = user.suspended_until
        raise Forbidden(suspension_message(user.suspended_reason, until),
                        code="account_suspended",
                        details={"reason": user.suspended_reason or "",
                                 "until": clock.isoformat(until) if until else None})
    return user


def _touch(session: AuthSession) -> None:
    now = clock.now()
    if now - session.last_used_at >= TOUCH_INTERVAL:
        with database.atomic():
            AuthSession.update(last_used_at=now).where(AuthSession.id == session.id).execute()
        session.last_used_at = now  # the cached row too: one write a minute, not per request


def principal_from_cookie(token: str) -> tuple[Principal, AuthSession] | None:
    """The signed-in user of a dashboard cookie, or None when it is not (or no longer) valid."""
    digest = hash_token(token)
    key = ("cookie", digest)
    session = authcache.get(key)  # as for access tokens: see `_session_of`
    if session is None:
        gen = authcache.generation()
        session = (AuthSession.select(AuthSession, User).join(User)
                   .where(AuthSession.token_hash == digest, AuthSession.kind == "browser")
                   .first())
        if session is not None:
            authcache.put(key, session, gen)
    if session is None or session.revoked_at is not None:
        return None
    now = clock.now()
    idle = dt.timedelta(minutes=runtime.get(config.active(), "SESSION_IDLE_MINUTES"))
    if session.expires_at <= now or session.last_used_at + idle <= now:
        return None
    _touch(session)
    return Principal(require_active(session.user), session.id, "session"), session


def _verified_access_claims(token: str) -> dict:
    """An access token's claims, its signature checked once per token and process: the
    verified claims are kept (`_VERIFIED_MAX` at most) and only their times are checked
    again on each use (`_check_times`), so expiry is never cached."""
    key = (token, _signing_key(ACCESS_AUDIENCE))
    claims = _verified.get(key)
    if claims is None:
        claims = _decode(token, ACCESS_AUDIENCE, ACCESS_TYP)
        with _verified_lock:
            if len(_verified) >= _VERIFIED_MAX:
                _verified.clear()
            _verified[key] = claims
        return claims
    _check_times(claims)
    return claims


def _session_of(session_id: Any) -> AuthSession | None:
    """The session row (with its user) an access token names, through the authorization
    cache: at most `authcache.TTL` seconds old, and dropped at once in this process when
    a session is revoked or a user's standing changes (`authcache.invalidate()`)."""
    if not isinstance(session_id, str):
        return None
    key = ("session", session_id)
    session = authcache.get(key)
    if session is None:
        gen = authcache.generation()
        session = (AuthSession.select(AuthSession, User).join(User)
                   .where(AuthSession.id == session_id).first())
        if session is None:
            return None
        authcache.put(key, session, gen)
    return session


def principal_from_access_token(token: str) -> Principal:
    claims = _verified_access_claims(token)
    session = _session_of(claims.get("sid"))
    if session is None or session.user_id != claims["sub"] or session.revoked_at is not None \
            or session.expires_at <= clock.now():
        raise Unauthorized("This session has ended; sign in again.", code="session_ended")
    _touch(session)
    return Principal(require_active(session.user), session.id, "token")


def _revoke(session: AuthSession, reason: str) -> None:
    (AuthSession.update(revoked_at=clock.now(), revoked_reason=reason)
     .where(AuthSession.id == session.id, AuthSession.revoked_at.is_null()).execute())


def _live(user: User) -> ModelSelect[AuthSession]:
    now = clock.now()
    return AuthSession.select().where(AuthSession.user == user,
                                      AuthSession.revoked_at.is_null(),
                                      AuthSession.expires_at > now)


def list_sessions(principal: Principal, limit: int = pagination.MAX_LIMIT,
                  cursor: str | None = None) -> pagination.Page[AuthSession]:
    """The user's live sessions, newest first (idle browser sessions are left out)."""
    idle = dt.timedelta(minutes=runtime.get(config.active(), "SESSION_IDLE_MINUTES"))
    query = _live(principal.user).where((AuthSession.kind != "browser") |
                                        (AuthSession.last_used_at > clock.now() - idle))
    return pagination.page(query, AuthSession, limit, cursor)


@authcache.invalidates
def revoke_session(principal: Principal, session_id: str) -> None:
    """End one of the user's sessions; another user's session is simply not found."""
    with database.atomic():
        session = AuthSession.get_or_none(AuthSession.id == session_id,
                                          AuthSession.user == principal.user)
        if session is None or session.revoked_at is not None:
            raise NotFound("No such session.", code="session_not_found")
        _revoke(session, "revoked_by_user")
        audit.record("auth.session_revoked", actor=principal.user, target_type="session",
                     target_id=session_id, ip=principal.ip)


@authcache.invalidates
def revoke_other_sessions(principal: Principal, reason: str = "revoked_by_user") -> int:
    """End every session of the user except the one making the request."""
    with database.atomic():
        count = (AuthSession.update(revoked_at=clock.now(), revoked_reason=reason)
                 .where(AuthSession.user == principal.user, AuthSession.revoked_at.is_null(),
                        AuthSession.id != (principal.session_id or ""))
                 .execute())
        audit.record("auth.sessions_revoked", actor=principal.user, ip=principal.ip, count=count,
                     reason=reason)
    return count


def revoke_all_sessions(user: User, reason: str) -> int:
    """End every session of `user` (password reset, suspension). Call inside a transaction,
    and `authcache.invalidate()` once it is committed (cached sessions end then)."""
    return (AuthSession.update(revoked_at=clock.now(), revoked_reason=reason)
            .where(AuthSession.user == user, AuthSession.revoked_at.is_null()).execute())


@authcache.invalidates
def end_session(principal: Principal) -> None:
    """Sign out: the current session (browser or refresh family) is revoked."""
    if principal.session_id is None:
        return
    with database.atomic():
        session = AuthSession.get_or_none(AuthSession.id == principal.session_id)
        if session is not None:
            _revoke(session, "signed_out")
            audit.record("auth.signed_out", actor=principal.user, target_type="session",
                         target_id=session.id, ip=principal.ip)


@authcache.invalidates
def end_session_by_refresh_token(refresh_token: str, ip: str = "") -> None:
    row = RefreshToken.get_or_none(RefreshToken.token_hash == hash_token(refresh_token))
    if row is not None:
        with database.atomic():
            _revoke(row.session, "signed_out")
            audit.record("auth.signed_out", actor=row.session.user_id, target_type="session",
                         target_id=row.session_id, ip=ip)
