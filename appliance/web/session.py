"""Dashboard sign-in state: the session cookie, CSRF protection and the login guard.

The cookie `appliance_session` holds a random token whose hash names an `AuthSession`
row (HttpOnly, SameSite=Lax, Secure over HTTPS). Every state-changing request to the
dashboard must carry the CSRF token - the signed-in session's own token, or before
sign-in a random token double-submitted as the `appliance_csrf` cookie - in the form
field `csrf_token` or the `X-CSRF-Token` header (htmx sends the header, see base.html).
"""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, g, redirect, request, url_for

from appliance.errors import ApplianceError, Forbidden
from appliance.http import client_ip, user_agent
from appliance.services.accounts import sessions, users
from appliance.services.principal import Principal

SESSION_COOKIE = "appliance_session"
CSRF_COOKIE = "appliance_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _secure() -> bool:
    mode = current_app.config["APPLIANCE"]["COOKIE_SECURE"]
    return request.is_secure if mode == "auto" else mode == "true"


def load_principal() -> None:
    """before_request: resolve the cookie once per request into g.principal."""
    g.principal = None
    g.web_session = None
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return
    try:
        found = sessions.principal_from_cookie(token)
    except ApplianceError:  # e.g. suspended: treated as signed out, the cookie is cleared
        found = None
        g.clear_session_cookie = True
    if found is None:
        g.clear_session_cookie = True
        return
    principal, g.web_session = found
    g.principal = replace(principal, ip=client_ip())


def current_principal() -> Principal | None:
    return g.get("principal")


def csrf_token() -> str:
    if g.get("web_session") is not None:
        return g.web_session.csrf_token
    token = request.cookies.get(CSRF_COOKIE) or g.get("new_csrf_cookie")
    if not token:
        token = g.new_csrf_cookie = secrets.token_urlsafe(24)
    return token


def check_csrf() -> None:
    """before_request: refuse a state-changing dashboard request without the right token."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    expected = (g.web_session.csrf_token if g.get("web_session") is not None
                else request.cookies.get(CSRF_COOKIE, ""))
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise Forbidden("The form has expired or did not come from this site; reload the "
                        "page and try again.", code="csrf_failed")


def finish_response(response: Response) -> Response:
    """after_request: set or clear the cookies this request decided on."""
    if g.get("new_csrf_cookie"):
        response.set_cookie(CSRF_COOKIE, g.new_csrf_cookie, httponly=True, samesite="Lax",
                            secure=_secure())
    if g.get("set_session_cookie"):
        response.set_cookie(SESSION_COOKIE, g.set_session_cookie, httponly=True,
                            samesite="Lax", secure=_secure(),
                            max_age=sessions.max_hours() * 3600)
    elif g.get("clear_session_cookie"):
        response.delete_cookie(SESSION_COOKIE)
    return response


def sign_in_browser(principal_user: Any) -> None:
    """Start a dashboard session for the user; the cookie is set on this response."""
    users.record_sign_in(principal_user, client_ip(), "browser")
    session, token = sessions.start_browser_session(principal_user, client_ip(), user_agent())
    g.set_session_cookie = token
    g.web_session = session
    g.principal = Principal(principal_user, session.id, "session", ip=client_ip())


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths are followed after sign-in (no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_principal() is None:
            return redirect(url_for("auth.signin", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    @login_required
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not current_principal().is_admin:
            raise Forbidden("This page is for administrators.", code="admin_only")
        return view(*args, **kwargs)

    return wrapped
