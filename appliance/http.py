"""Request ids, body limits and the one error envelope for everything that can fail.

Every response carries `X-Request-Id`. Every error - a domain error from a service, an
unknown route, a wrong method, malformed JSON, an oversized body, an unexpected
exception - becomes `{"error": {"code", "message", "request_id", "details"}}` with the
right status. Browsers asking for a dashboard page get the same facts as an HTML page.
A database that is locked past the busy timeout, read-only, full or failing with I/O
errors is 503 `database_unavailable` with `Retry-After`, logged as a warning. Other
unexpected exceptions are logged with the request id; their text never reaches a client.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, g, json, render_template, request
from werkzeug.exceptions import HTTPException

from appliance.db import retry_after, unavailable_reason
from appliance.errors import (
    ApplianceError,
    DatabaseUnavailable,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
)
from appliance.services.accounts import authcache

log = logging.getLogger("appliance.http")


_ids = random.Random(secrets.randbits(128))  # noqa: S311 - ids, not secrets


def client_ip() -> str:
    """The address of this request's client (the proxy's, unless the WSGI server was told
    to trust a forwarded header)."""
    return request.remote_addr or ""


def user_agent() -> str:
    return request.headers.get("User-Agent", "")[:300]


def new_request_id() -> str:
    # Request ids name log lines; they guard nothing, so a fast PRNG seeded from the
    # OS is enough (os.urandom per request was a measurable share of a request's cost).
    return f"req_{_ids.getrandbits(96):024x}"


def request_id() -> str:
    rid = g.get("request_id")
    if rid is None:
        rid = g.request_id = new_request_id()
    return rid


def _start_request() -> None:
    g.request_id = new_request_id()
    req = request._get_current_object()
    if "CONTENT_LENGTH" not in req.environ:
        return
    limit = req.max_content_length
    if limit is not None and (req.content_length or 0) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.",
                              details={"limit_bytes": limit})


def _tag_response(response: Response) -> Response:
    response.headers["X-Request-Id"] = request_id()
    return response


def wants_html() -> bool:
    """True for a browser asking for a dashboard page; the API always answers JSON."""
    if request.path.startswith("/api/") or request.path == "/metrics":
        return False
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html"


def error_response(error: ApplianceError) -> Response:
    body: dict[str, Any] = {
        "code": error.code,
        "message": error.message,
        "request_id": request_id(),
        "details": error.details,
    }
    if wants_html():
        response = Response(render_template("error.html", error=body, status=error.status),
                            status=error.status, mimetype="text/html")
    else:
        response = Response(json.dumps({"error": body}), status=error.status,
                            mimetype="application/json")
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _from_http_exception(exc: HTTPException) -> ApplianceError:
    if exc.code == 404:
        return NotFound(f"There is no route {request.method} {request.path}.",
                        code="route_not_found")
    if exc.code == 405:
        allowed = sorted(exc.valid_methods or []) if hasattr(exc, "valid_methods") else []
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.path}.",
            details={"allowed": allowed},
            headers={"Allow": ", ".join(allowed)} if allowed else None,
        )
        return error
    if exc.code == 413:
        return PayloadTooLarge(details={"limit_bytes": request.max_content_length})
    if exc.code == 400:
        return InvalidRequest(exc.description or None)
    error = ApplianceError(exc.description or exc.name,
                           code=exc.name.lower().replace(" ", "_").replace("'", ""))
    error.status = exc.code or 500
    return error


@dataclass
class RequestHooks:
    """Per-request hooks of the appliance, run by one Flask hook each way.

    Flask wraps every registered hook in `ensure_sync` (an `inspect` call per hook per
    request); running our few hooks from one registered function keeps that cost flat.
    `before` hooks run in order (the first to return a response ends the request);
    `after` hooks run in order on the response.
    """

    before: list[Callable[[], Response | None]] = field(default_factory=list)
    after: list[Callable[[Response], Response]] = field(default_factory=list)

    def run_before(self) -> Response | None:
        for hook in self.before:
            response = hook()
            if response is not None:
                return response
        return None

    def run_after(self, response: Response) -> Response:
        for hook in self.after:
            response = hook(response)
        return response


def add_hooks(app: Flask, before: Callable[[], Response | None] | None = None,
              after: Callable[[Response], Response] | None = None, *,
              outermost: bool = False) -> None:
    """Add request hooks nested like Flask's: a later `before` runs later and its `after`
    earlier. `outermost` wraps everything added so far and later (timers)."""
    hooks: RequestHooks = app.extensions["appliance_hooks"]
    if before is not None:
        hooks.before.insert(0, before) if outermost else hooks.before.append(before)
    if after is not None:
        hooks.after.append(after) if outermost else hooks.after.insert(0, after)


def init_app(app: Flask) -> None:
    hooks = app.extensions["appliance_hooks"] = RequestHooks()
    app.before_request(hooks.run_before)
    app.after_request(hooks.run_after)
    add_hooks(app, _start_request, _tag_response)

    @app.teardown_request
    def forget_authorization_after_a_change(_exc: BaseException | None) -> None:
        # Whatever a POST, PATCH, PUT or DELETE changed (a profile, an email, a role, MFA,
        # a revoked session) is committed by now: the authorization cache, which keeps
        # users, sessions and keys for a few seconds, reads it afresh. Reads keep it.
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            authcache.invalidate()

    @app.errorhandler(ApplianceError)
    def handle_domain_error(exc: ApplianceError) -> Response:
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Response:
        return error_response(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception) -> Response:
        reason = unavailable_reason(exc)
        if reason is not None:  # the database, not the code: 503, and no traceback
            log.warning("database unavailable (%s) request_id=%s %s %s: %s", reason,
                        request_id(), request.method, request.path, exc)
            return error_response(DatabaseUnavailable(reason, retry_after(reason)))
        log.exception("unexpected error request_id=%s %s %s",
                      request_id(), request.method, request.path)
        return error_response(ApplianceError())
