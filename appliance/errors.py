"""Domain errors: what services raise, and what the one error envelope is made from.

Every error a client sees is `{"error": {"code", "message", "request_id", "details"}}`
(DESIGN.md section 5). Services raise the classes below; `appliance.http` turns them,
and every other failure (unknown route, wrong method, bad JSON, oversized body, an
unexpected exception), into that envelope.
"""

from __future__ import annotations

from typing import Any


class ApplianceError(Exception):
    """Base of all domain errors: an HTTP status, a stable code and a human message."""

    status = 500
    code = "internal_error"
    message = "Something went wrong on our side."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class InvalidRequest(ApplianceError):
    status = 400
    code = "invalid_request"
    message = "The request is not valid."

    def __init__(self, message: str | None = None, *, field: str | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        if field is not None:
            self.details.setdefault("field", field)


class Unauthorized(ApplianceError):
    status = 401
    code = "unauthorized"
    message = "Authentication is required."


class PaymentRequired(ApplianceError):
    status = 402
    code = "payment_required"
    message = "The balance is too low for this."


class Forbidden(ApplianceError):
    status = 403
    code = "forbidden"
    message = "You are not allowed to do this."


class NotFound(ApplianceError):
    status = 404
    code = "not_found"
    message = "Not found."


class MethodNotAllowed(ApplianceError):
    status = 405
    code = "method_not_allowed"
    message = "This method is not allowed here."


class Conflict(ApplianceError):
    status = 409
    code = "conflict"
    message = "The request conflicts with the current state."


class Unsupported(Conflict):
    """The engine behind a resource cannot do this; `details.capability` names what."""

    code = "unsupported"

    def __init__(self, capability: str, message: str | None = None, **kwargs: Any):
        super().__init__(message or f"This engine does not support {capability}.", **kwargs)
        self.details.setdefault("capability", capability)


class Gone(ApplianceError):
    status = 410
    code = "gone"
    message = "This no longer exists."


class PayloadTooLarge(ApplianceError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(ApplianceError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as application/json."


class IdempotencyMismatch(ApplianceError):
    status = 422
    code = "idempotency_mismatch"
    message = "This Idempotency-Key was used with a different request."


class QuotaExceeded(ApplianceError):
    status = 403
    code = "quota_exceeded"
    message = "This would exceed your account's limits."


class RateLimited(ApplianceError):
    status = 429
    code = "rate_limited"
    message = "Too many requests; slow down."

    def __init__(self, retry_after: int, message: str | None = None, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(max(1, int(retry_after))))
        self.details.setdefault("retry_after", max(1, int(retry_after)))


class ServiceUnavailable(ApplianceError):
    status = 503
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be used right now (locked past the busy timeout, an I/O error,
    read-only, full); `details.reason` says which, `Retry-After` when to try again."""

    code = "database_unavailable"
    message = "The database is unavailable; try again shortly."

    def __init__(self, reason: str, retry_after: int, message: str | None = None,
                 **kwargs: Any):
        super().__init__(message, **kwargs)
        self.headers.setdefault("Retry-After", str(max(1, int(retry_after))))
        self.details.setdefault("reason", reason)


class DriverError(Exception):
    """Raised by instance drivers. `permanent` says whether retrying can help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
