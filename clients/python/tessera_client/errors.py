"""Typed exceptions for API errors, and their mapping from HTTP statuses and gRPC codes.

Every error the server reports arrives as a :class:`TesseraAPIError` subclass carrying the
server's message, the HTTP status (or gRPC code) and the stable snake_case ``code`` of the
error body, so callers can ``except NotFoundError`` whichever transport they use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import grpc

__all__ = [  # re-exported by the package
    "AuthError",
    "Cancelled",
    "ConflictError",
    "DeadlineExceeded",
    "InvalidRequest",
    "JobFailed",
    "NotFoundError",
    "RateLimited",
    "ServerError",
    "TesseraAPIError",
    "Unavailable",
]


class TesseraAPIError(Exception):
    """Base class of every error this SDK raises for a failed call.

    ``status`` is the HTTP status (gRPC codes are mapped to the HTTP status the server's
    error table pairs with them); ``code`` the server's snake_case code (``not_found``);
    ``grpc_code`` the gRPC status code when the call went over gRPC; ``retry_after`` the
    seconds the server asked the client to wait (429), when it said.
    """

    default_status: int = 500
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        grpc_code: grpc.StatusCode | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status if status is not None else self.default_status
        self.code = code or "unknown"
        self.grpc_code = grpc_code
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f"gRPC {self.grpc_code.name}" if self.grpc_code else f"HTTP {self.status}"
        return f"{self.message} ({where}, {self.code})"


class InvalidRequest(TesseraAPIError):
    """400 / INVALID_ARGUMENT: the request is malformed or out of bounds."""

    default_status = 400


class AuthError(TesseraAPIError):
    """401, 403 / UNAUTHENTICATED, PERMISSION_DENIED: missing or wrong API key."""

    default_status = 401


class NotFoundError(TesseraAPIError):
    """404 / NOT_FOUND, UNIMPLEMENTED: unknown job, model, route or endpoint."""

    default_status = 404


class ConflictError(TesseraAPIError):
    """409 / ALREADY_EXISTS: an idempotency key reused with a different request."""

    default_status = 409


class RateLimited(TesseraAPIError):
    """429 / RESOURCE_EXHAUSTED: the queue or a replica is full (retried automatically)."""

    default_status = 429
    retryable = True


class Cancelled(TesseraAPIError):
    """499 / CANCELLED: the request or job was cancelled."""

    default_status = 499


class Unavailable(TesseraAPIError):
    """503 / UNAVAILABLE, or the server could not be reached (retried automatically)."""

    default_status = 503
    retryable = True


class DeadlineExceeded(TesseraAPIError):
    """The call's timeout passed (client side), or 504 / DEADLINE_EXCEEDED."""

    default_status = 504


class ServerError(TesseraAPIError):
    """500 / INTERNAL and any other status: a server bug (the detail is in its log)."""

    default_status = 500


class JobFailed(TesseraAPIError):
    """A job this call waited on ended ``failed`` or ``cancelled``; ``job`` is its last state."""

    default_status = 500

    def __init__(self, message: str, *, job: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.job = job


_BY_STATUS: dict[int, type[TesseraAPIError]] = {
    400: InvalidRequest,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    405: NotFoundError,
    408: DeadlineExceeded,
    409: ConflictError,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
    499: Cancelled,
    502: Unavailable,
    503: Unavailable,
    504: DeadlineExceeded,
}

_BY_GRPC: dict[grpc.StatusCode, tuple[type[TesseraAPIError], int]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (InvalidRequest, 400),
    grpc.StatusCode.OUT_OF_RANGE: (InvalidRequest, 400),
    grpc.StatusCode.FAILED_PRECONDITION: (InvalidRequest, 400),
    grpc.StatusCode.UNAUTHENTICATED: (AuthError, 401),
    grpc.StatusCode.PERMISSION_DENIED: (AuthError, 403),
    grpc.StatusCode.NOT_FOUND: (NotFoundError, 404),
    grpc.StatusCode.UNIMPLEMENTED: (NotFoundError, 404),
    grpc.StatusCode.ALREADY_EXISTS: (ConflictError, 409),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (RateLimited, 429),
    grpc.StatusCode.CANCELLED: (Cancelled, 499),
    grpc.StatusCode.UNAVAILABLE: (Unavailable, 503),
    grpc.StatusCode.DEADLINE_EXCEEDED: (DeadlineExceeded, 504),
}

# The server's snake_case codes (gRPC code names) → the gRPC code, for SSE ``error`` events.
_CODE_NAMES = {c.name.lower(): c for c in grpc.StatusCode}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` value (delta-seconds; HTTP dates are not sent here)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def from_http(status: int, body: bytes, headers: Mapping[str, str]) -> TesseraAPIError:
    """The exception for an HTTP error response.

    Reads the project's ``{"error": {"code", "message"}}`` body, FastAPI's ``{"detail": ...}``
    (e.g. an unknown path) or plain text (a proxy's own error page).
    """
    message, code = "", None
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        message = str(data["error"].get("message") or "")
        code = data["error"].get("code")
    elif isinstance(data, dict) and "detail" in data:
        message = data["detail"] if isinstance(data["detail"], str) else json.dumps(data["detail"])
    elif body:
        message = body.decode("utf-8", "replace").strip()[:500]
    cls = _BY_STATUS.get(status, ServerError)
    return cls(
        message or f"HTTP {status}",
        status=status,
        code=code or _default_code(cls, status),
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def from_grpc(error: grpc.RpcError) -> TesseraAPIError:
    """The exception for a failed gRPC call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = error.details() if callable(getattr(error, "details", None)) else str(error)
    cls, status = _BY_GRPC.get(code, (ServerError, 500))
    retry_after = None
    trailing = getattr(error, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key.lower() == "retry-after":
            retry_after = parse_retry_after(value if isinstance(value, str) else value.decode())
    return cls(
        details or code.name,
        status=status,
        code=code.name.lower(),
        grpc_code=code,
        retry_after=retry_after,
    )


def from_code_name(code: str, message: str) -> TesseraAPIError:
    """The exception for an error named by its snake_case code (an SSE ``error`` event)."""
    grpc_code = _CODE_NAMES.get(code, grpc.StatusCode.UNKNOWN)
    cls, status = _BY_GRPC.get(grpc_code, (ServerError, 500))
    return cls(message or code, status=status, code=code)


def _default_code(cls: type[TesseraAPIError], status: int) -> str:
    for code, (known, paired) in _BY_GRPC.items():
        if known is cls and paired == status:
            return code.name.lower()
    return "internal" if status >= 500 else "unknown"
