"""The shell of every public HTTP app: the one JSON error body, the API key check, and the
handlers that turn any exception into that body.

``error_response`` is the only error renderer: the gateway's routes and the jobs router
(``tessera.jobs.api``) both answer with it, so every 4xx/5xx has the same shape.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.common import metrics
from tessera.common.auth import check_api_key, is_open_http_path
from tessera.common.errors import (
    InvalidArgument,
    TesseraError,
    Unauthenticated,
    error_code_name,
    http_status,
    public_message,
)
from tessera.common.serving import unwrap_error

log = logging.getLogger("tessera.http")

OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
}


def error_response(error: BaseException) -> JSONResponse:
    """The one JSON error shape (OpenAI-compatible: ``error.message``, ``error.type``).

    ``Retry-After`` is rounded up: a client told to wait 2 s for a 2.4 s back-off would come
    back too early and be refused again."""
    error = unwrap_error(error)
    status = http_status(error)
    if status >= 500 and not isinstance(error, TesseraError):
        log.error("unhandled error", exc_info=error)
    body = {
        "error": {
            "code": error_code_name(error),
            "message": public_message(error),
            "type": OPENAI_ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "request_error"
            ),
        }
    }
    headers = {}
    retry_after = getattr(error, "retry_after_s", None)
    if retry_after:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(**fastapi_kwargs: object) -> FastAPI:
    """A FastAPI app with the project's error handlers and the API key middleware."""
    app = FastAPI(**fastapi_kwargs)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # rejected before any route handler ran: count it here, under route "other"
        metrics.record_request(metrics.OTHER, 400, "http", 0.0)
        parts = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return error_response(InvalidArgument("; ".join(parts) or "invalid request"))

    @app.exception_handler(TesseraError)
    async def _domain(_: Request, exc: TesseraError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    app.add_middleware(ApiKeyAndLastResort)
    return app


class ApiKeyAndLastResort:
    """Pure ASGI middleware: the API key check, and a JSON error for anything raised past the
    exception handlers. (Starlette's ``BaseHTTPMiddleware`` would do the same at ~7% of the
    gateway's CPU, an extra task per request.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The path inside the app: under a Serve route prefix, scope["path"] starts with it.
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if not is_open_http_path(path):
            try:
                check_api_key(Headers(scope=scope).get("authorization"))
            except Unauthenticated as e:  # refused before any route: counted under "other"
                metrics.record_request(metrics.OTHER, e, "http", 0.0)
                await error_response(e)(scope, receive, send)
                return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as e:
            if started:  # too late for a JSON body: the connection is closed instead
                raise
            await error_response(e)(scope, receive, send)
