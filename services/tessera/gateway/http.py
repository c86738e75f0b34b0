"""The FastAPI app of the public HTTP API: error bodies, auth, and the response shapes.

Route handlers live on the Gateway deployment (``@serve.ingress``); this module holds what
they share, so the deployment reads as a list of endpoints.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.common import metrics
from tessera.common.auth import OPEN_HTTP_PATHS, check_api_key
from tessera.common.errors import (
    InvalidArgument,
    TesseraError,
    Unauthenticated,
    error_code_name,
    http_status,
    public_message,
)
from tessera.common.serving import unwrap_error
from tessera.gateway.schemas import ImageData, ImagesResponse
from tessera.v1 import generation_pb2

log = logging.getLogger("tessera.gateway")

OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
}


def error_response(error: BaseException) -> JSONResponse:
    """The one JSON error shape (OpenAI-compatible: ``error.message``, ``error.type``)."""
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
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return JSONResponse(body, status_code=status, headers=headers)


def create_app() -> FastAPI:
    app = FastAPI(
        title="Tessera",
        version="1",
        description="Text-to-image generation: autoregressive (`ar`) and unCLIP (`unclip`) routes.",
    )

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
        if not path.startswith(OPEN_HTTP_PATHS):
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


def images_response(res: generation_pb2.GenerateResponse, response_format: str) -> ImagesResponse:
    """GenerateResponse → OpenAI's images response (``url`` is a data: URL)."""
    data = []
    for img in res.images:
        b64 = base64.b64encode(img.png).decode()
        if response_format == "url":
            data.append(ImageData(url=f"data:image/png;base64,{b64}"))
        else:
            data.append(ImageData(b64_json=b64))
    return ImagesResponse(
        created=int(time.time()),
        data=data,
        seed=res.seed,
        route=res.route,
        model=res.model,
        elapsed_ms=res.elapsed_ms,
    )


def decode_b64(value: str, what: str = "image") -> bytes:
    """Base64 (or a data: URL) → bytes, as an InvalidArgument when malformed."""
    if value.startswith("data:"):
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidArgument(f"{what} is not valid base64") from e


# ---- request/response bodies of the component endpoints ----------------------------------
class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, max_length=16, description="base64 PNGs")
    resize: bool = True
    return_latents: bool = False


class GridBody(BaseModel):
    tokens: list[int] = Field(max_length=4096)
    height: int = Field(ge=1, le=64)
    width: int = Field(ge=1, le=64)


class LatentBody(BaseModel):
    values: list[float] = Field(max_length=65536)
    shape: list[int] = Field(min_length=3, max_length=3)


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grids: list[GridBody] = Field(default_factory=list, max_length=16)
    latents: list[LatentBody] = Field(default_factory=list, max_length=16)
    quantize: bool = True


class EmbedTextBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(min_length=1, max_length=64)


class EmbedImageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(min_length=1, max_length=16, description="base64 PNGs")
