"""The async jobs HTTP API: ``build_jobs_router(get_queue)`` → a FastAPI router.

- ``POST /v1/jobs`` (GenerationParams fields + ``priority``; ``Idempotency-Key`` header)
  → 202 + the job, ``Location: /v1/jobs/{id}``.
- ``GET /v1/jobs/{id}`` (``?include_result=false`` to skip the images),
  ``DELETE /v1/jobs/{id}`` (cancel; returns the job),
- ``GET /v1/jobs/{id}/events``: Server-Sent Events until the job ends: ``progress`` events
  (state, step counts, preview PNGs in base64) and a last ``done`` event with the full job;
  each carries an ``id:`` so a client can resume with ``Last-Event-ID`` (``0-0``: replay
  from the job's first event).
- ``GET /v1/jobs/{id}/images/{index}``: one result image as ``image/png``.

The router is self-contained: it validates bodies itself and renders every error with the
project's one error body (``tessera.common.http.error_response``: 429 with ``Retry-After``),
so it behaves the same whatever exception handlers the app installs. Its queue and the
pre-enqueue check are injected (``build_jobs_router(get_queue, check)``); the gateway passes
its own.
"""

# No `from __future__ import annotations` here: Ray Serve rebuilds the FastAPI routes in the
# replica, where string annotations (Request, UploadFile) no longer resolve.

import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from tessera.common.errors import InvalidArgument, NotFound, error_code_name, public_message
from tessera.common.http import error_response
from tessera.jobs.edit_api import EditCheck, add_edit_job_route
from tessera.jobs.queue import JobQueue, JobRecord, JobUpdate
from tessera.jobs.redis_retry import store_errors
from tessera.routes.edit_requests import EditJobRequest
from tessera.routes.schemas import (
    EditParams,
    GenerationParams,
    ImageData,
    ImagesResponse,
    validate,
)

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 1024


class JobSubmitRequest(GenerationParams):
    """POST /v1/jobs: the generation request plus the job's priority."""

    priority: Literal["normal", "high"] = "normal"


class ProgressView(BaseModel):
    step: int
    total_steps: int
    stage: str


class JobView(BaseModel):
    """A job as the HTTP API shows it. Times are Unix seconds; null when not reached."""

    id: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    priority: Literal["normal", "high"]
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: ProgressView
    cancel_requested: bool
    error: str | None
    result_expires_at: float | None
    result_expired: bool
    result: ImagesResponse | None
    request: GenerationParams | EditParams  # an edit job's, without its images


class PreviewView(BaseModel):
    b64_png: str
    width: int
    height: int


class ProgressEvent(BaseModel):
    """The data of an SSE ``progress`` event."""

    id: str
    state: str
    attempts: int
    progress: ProgressView
    cancel_requested: bool
    previews: list[PreviewView]


def job_view(job: JobRecord, *, include_result: bool = True) -> JobView:
    result = None
    if include_result and job.result is not None:
        as_url = job.request.response_format == "url"
        result = ImagesResponse(
            created=int(job.finished_at or job.created_at),
            data=[
                ImageData(url=f"/v1/jobs/{job.id}/images/{i}")
                if as_url
                else ImageData(b64_json=base64.b64encode(img.png).decode())
                for i, img in enumerate(job.result.images)
            ],
            seed=job.result.seed,
            route=job.result.route,
            model=job.result.model,
            elapsed_ms=job.result.elapsed_ms,
        )
    return JobView(
        id=job.id,
        state=job.state,  # type: ignore[arg-type]
        priority=job.priority,  # type: ignore[arg-type]
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=ProgressView(step=job.step, total_steps=job.total_steps, stage=job.stage),
        cancel_requested=job.cancel_requested,
        error=job.error,
        result_expires_at=job.result_expires_at,
        result_expired=job.result_expired,
        result=result,
        request=job.request.params() if isinstance(job.request, EditJobRequest) else job.request,
    )


async def _read_submit_body(request: Request) -> JobSubmitRequest:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidArgument(f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument("body must be a JSON object") from e
    if not isinstance(data, dict):
        raise InvalidArgument("body must be a JSON object")
    return validate(JobSubmitRequest, data)  # type: ignore[return-value]


def _sse(event: str, data: BaseModel, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {data.model_dump_json()}\n\n"


def _progress_event(update: JobUpdate) -> ProgressEvent:
    job = update.job
    return ProgressEvent(
        id=job.id,
        state=job.state,
        attempts=job.attempts,
        progress=ProgressView(step=job.step, total_steps=job.total_steps, stage=job.stage),
        cancel_requested=job.cancel_requested,
        previews=[
            PreviewView(b64_png=base64.b64encode(p.png).decode(), width=p.width, height=p.height)
            for p in update.previews
        ],
    )


_SUBMIT_SCHEMA = JobSubmitRequest.model_json_schema()


def build_jobs_router(
    get_queue: Callable[[], JobQueue],
    check: Callable[[GenerationParams], None] | None = None,
    check_edit: EditCheck | None = None,
) -> APIRouter:
    """The /v1/jobs routes over the queue ``get_queue()`` returns (called per request).

    ``check(params)``, if given, runs before a job is enqueued and may raise a tessera error
    (e.g. the gateway's model/route/size checks), so requests that can never run get their
    4xx now instead of a failed job later; ``check_edit(image, params, mask)`` does the
    same for an edit job (``POST /v1/jobs/edits``, ``jobs/edit_api.py``)."""
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    errors = {
        400: {"description": "invalid request"},
        404: {"description": "unknown job"},
        429: {"description": "queue full; see Retry-After"},
        503: {"description": "job store unavailable"},
    }

    @router.post(
        "",
        status_code=202,
        response_model=JobView,
        responses=errors,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _SUBMIT_SCHEMA}},
            },
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 128,
                        "pattern": "^[\\x20-\\x7e]+$",
                    },
                    "description": "Same key and request: the first job is returned. "
                    "Printable characters.",
                }
            ],
        },
        summary="Submit a generation job",
    )
    async def submit_job(request: Request) -> Response:
        try:
            body = await _read_submit_body(request)
            params = GenerationParams.model_validate(body.model_dump(exclude={"priority"}))
            if check is not None:
                check(params)
            key = request.headers.get("idempotency-key")
            with store_errors():
                job = await get_queue().submit(params, priority=body.priority, idempotency_key=key)
        except Exception as e:  # noqa: BLE001 - rendered as the project's error body
            return error_response(e)
        return JSONResponse(
            job_view(job).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )

    @router.get("/{job_id}", response_model=JobView, responses=errors, summary="Get a job")
    async def get_job(job_id: str, include_result: bool = True) -> Response:
        try:
            with store_errors():
                job = await get_queue().get(job_id, with_result=include_result)
        except Exception as e:  # noqa: BLE001
            return error_response(e)
        return JSONResponse(job_view(job, include_result=include_result).model_dump(mode="json"))

    @router.delete("/{job_id}", response_model=JobView, responses=errors, summary="Cancel a job")
    async def cancel_job(job_id: str) -> Response:
        try:
            with store_errors():
                job = await get_queue().cancel(job_id)
        except Exception as e:  # noqa: BLE001
            return error_response(e)
        return JSONResponse(job_view(job).model_dump(mode="json"))

    @router.get(
        "/{job_id}/events",
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "progress stream"},
            **errors,
        },
        summary="Stream a job's progress (Server-Sent Events)",
    )
    async def job_events(job_id: str, request: Request) -> Response:
        queue = get_queue()
        last_event_id = request.headers.get("last-event-id") or None
        try:
            with store_errors():
                await queue.get(job_id, with_result=False)  # 404 before the stream starts
        except Exception as e:  # noqa: BLE001
            return error_response(e)

        async def stream() -> AsyncIterator[str]:
            try:
                with store_errors():
                    async for update in queue.watch(
                        job_id, last_event_id=last_event_id, keepalive=True
                    ):
                        if update.keepalive:
                            yield ": keepalive\n\n"
                        elif update.final:
                            yield _sse("done", job_view(update.job), update.event_id)
                        else:
                            yield _sse("progress", _progress_event(update), update.event_id)
            except Exception as e:  # noqa: BLE001 - the status line is already sent
                body = {"code": error_code_name(e), "message": public_message(e)}
                yield f"event: error\ndata: {json.dumps(body)}\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.get(
        "/{job_id}/images/{index}",
        responses={200: {"content": {"image/png": {}}}, **errors},
        summary="One result image of a succeeded job",
    )
    async def job_image(job_id: str, index: str) -> Response:
        try:
            # ASCII digits only: str.isdigit() also takes "²" or "١", which int() refuses,
            # and a job holds a handful of images, so six digits are plenty.
            if not (index.isascii() and index.isdigit()) or len(index) > 6:
                raise NotFound(f"no image {index!r}")
            i = int(index)
            with store_errors():
                job = await get_queue().get(job_id)
            if job.result is None:
                if job.result_expired:
                    raise NotFound(f"the result of job {job_id} has expired")
                raise NotFound(f"job {job_id} has no result (state {job.state})")
            if not 0 <= i < len(job.result.images):
                raise NotFound(f"job {job_id} has {len(job.result.images)} images")
        except Exception as e:  # noqa: BLE001
            return error_response(e)
        return Response(job.result.images[i].png, media_type="image/png")

    add_edit_job_route(router, get_queue, check_edit, job_view)
    return router
