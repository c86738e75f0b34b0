"""Domain errors and the one table that maps them to HTTP and gRPC status codes.

Services raise these; the HTTP layer and the gRPC layer translate them with
:func:`http_status` / :func:`grpc_status`. Anything else that escapes is a bug and becomes
500 / INTERNAL with a generic message (the detail goes to the log, not to the client).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc


class TesseraError(Exception):
    """Base class: an error whose message is safe to show to the caller."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class InvalidArgument(TesseraError):
    """The request is malformed or out of bounds."""


class NotFound(TesseraError):
    """An unknown route, model, job id or component."""


class AlreadyExists(TesseraError):
    """An idempotency key reused with a different request."""


class ResourceExhausted(TesseraError):
    """Backpressure: the queue or a replica is full; retry after ``retry_after_s``."""


class Unauthenticated(TesseraError):
    """Missing or wrong API key."""


class DeadlineExceeded(TesseraError):
    """The work ran past its time limit (e.g. a job attempt past ``run_timeout_s``)."""


class Cancelled(TesseraError):
    """The caller went away or cancelled the job."""


class Unavailable(TesseraError):
    """A dependency (a model service, Redis) is not ready; retryable."""


class ModelNotReady(Unavailable):
    """A checkpoint bundle is missing or corrupt."""


@dataclass(frozen=True)
class StatusPair:
    http: int
    grpc: grpc.StatusCode


# The one table. Order matters only for subclasses listed before their bases.
STATUS_TABLE: tuple[tuple[type[TesseraError], StatusPair], ...] = (
    (InvalidArgument, StatusPair(400, grpc.StatusCode.INVALID_ARGUMENT)),
    (Unauthenticated, StatusPair(401, grpc.StatusCode.UNAUTHENTICATED)),
    (NotFound, StatusPair(404, grpc.StatusCode.NOT_FOUND)),
    (AlreadyExists, StatusPair(409, grpc.StatusCode.ALREADY_EXISTS)),
    (ResourceExhausted, StatusPair(429, grpc.StatusCode.RESOURCE_EXHAUSTED)),
    (Cancelled, StatusPair(499, grpc.StatusCode.CANCELLED)),
    (DeadlineExceeded, StatusPair(504, grpc.StatusCode.DEADLINE_EXCEEDED)),
    (ModelNotReady, StatusPair(503, grpc.StatusCode.UNAVAILABLE)),
    (Unavailable, StatusPair(503, grpc.StatusCode.UNAVAILABLE)),
)
INTERNAL = StatusPair(500, grpc.StatusCode.INTERNAL)


def status_for(error: BaseException) -> StatusPair:
    """The status pair for an exception (INTERNAL for anything that is not a TesseraError)."""
    for cls, pair in STATUS_TABLE:
        if isinstance(error, cls):
            return pair
    return INTERNAL


def http_status(error: BaseException) -> int:
    return status_for(error).http


def grpc_status(error: BaseException) -> grpc.StatusCode:
    return status_for(error).grpc


def public_message(error: BaseException) -> str:
    """The message a client may see: the domain message, or a generic one for bugs."""
    if isinstance(error, TesseraError):
        return error.message
    return "internal error"


def error_code_name(error: BaseException) -> str:
    """A stable snake_case code for JSON error bodies, e.g. ``invalid_argument``."""
    return status_for(error).grpc.name.lower()
