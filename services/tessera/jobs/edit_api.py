"""``POST /v1/jobs/edits``: an instruction edit as an async job (multipart, as
``POST /v1/images/edits``, plus ``priority`` and the ``Idempotency-Key`` header).

The job's payload carries the source image and the mask (``EditJobRequest``, each at most
MAX_JOB_IMAGE_BYTES), so the worker needs nothing but the queue; progress, previews, results,
cancel and SSE are every job's (``jobs/api.py``). ``check_edit(image, params, mask)`` (the
gateway's) runs before the job is queued: a request that could never run is a 4xx now.
"""

# No `from __future__ import annotations` here: FastAPI resolves the handler's annotations
# (UploadFile, Form) at definition time.

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from tessera.common.errors import InvalidArgument
from tessera.common.http import error_response
from tessera.common.limits import (
    MAX_GUIDANCE,
    MAX_IMAGES_PER_REQUEST,
    MAX_JOB_IMAGE_BYTES,
    MAX_MODEL_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
)
from tessera.jobs.redis_retry import store_errors
from tessera.routes.edit_requests import EditJobRequest, check_image_bytes
from tessera.routes.schemas import SIZE_DESCRIPTION, SIZE_PATTERN, EditParams, validate

EditCheck = Callable[[bytes, EditParams, bytes | None], None]


async def _read(upload: UploadFile | None, what: str) -> bytes | None:
    """An upload's bytes, one byte over the job limit read so an oversize one is a 400."""
    if upload is None:
        return None
    data = await upload.read(MAX_JOB_IMAGE_BYTES + 1)
    check_image_bytes(data, what, MAX_JOB_IMAGE_BYTES)
    return data


def add_edit_job_route(
    router: APIRouter,
    get_queue: Callable[[], Any],
    check_edit: EditCheck | None,
    view: Callable[..., Any],
) -> None:
    """Register ``POST /edits`` on the jobs router; ``view(job)`` renders the job."""

    @router.post(
        "/edits",
        status_code=202,
        responses={
            400: {"description": "invalid request"},
            404: {"description": "unknown model, or no mixed-modal model"},
            429: {"description": "queue full; see Retry-After"},
            503: {"description": "job store unavailable"},
        },
        summary="Submit an edit job",
    )
    async def submit_edit_job(
        request: Request,
        image: UploadFile = File(
            ..., description=f"the source PNG (native size), at most {MAX_JOB_IMAGE_BYTES} bytes"
        ),
        prompt: str = Form(..., min_length=1, max_length=MAX_PROMPT_CHARS),
        mask: UploadFile = File(None, description="PNG, alpha 0 where the image may change"),
        n: int = Form(1, ge=1, le=MAX_IMAGES_PER_REQUEST),
        size: str = Form(None, pattern=SIZE_PATTERN.pattern, description=SIZE_DESCRIPTION),
        response_format: Literal["b64_json", "url"] = Form("b64_json"),
        model: str = Form(None, max_length=MAX_MODEL_NAME_CHARS),
        user: str = Form(None, max_length=256),
        seed: int = Form(None, ge=0, le=MAX_SEED),
        guidance_scale: float = Form(None, ge=0.0, le=MAX_GUIDANCE),
        image_guidance_scale: float = Form(None, ge=0.0, le=MAX_GUIDANCE),
        temperature: float = Form(None, gt=0.0, le=MAX_TEMPERATURE),
        top_k: int = Form(None, ge=0, le=MAX_TOP_K),
        priority: Literal["normal", "high"] = Form("normal"),
    ) -> Response:
        try:
            fields = {
                "prompt": prompt,
                "n": n,
                "size": size,
                "response_format": response_format,
                "model": model,
                "user": user,
                "seed": seed,
                "guidance_scale": guidance_scale,
                "image_guidance_scale": image_guidance_scale,
                "temperature": temperature,
                "top_k": top_k,
            }
            params = validate(EditParams, {k: v for k, v in fields.items() if v is not None})
            source = await _read(image, "image")
            if source is None:
                raise InvalidArgument("image is required")
            mask_bytes = await _read(mask, "mask")
            if check_edit is not None:
                check_edit(source, params, mask_bytes)
            payload = EditJobRequest.build(source, params, mask_bytes)
            key = request.headers.get("idempotency-key")
            with store_errors():
                job = await get_queue().submit(payload, priority=priority, idempotency_key=key)
        except Exception as e:  # noqa: BLE001 - rendered as the project's error body
            return error_response(e)
        return JSONResponse(
            view(job).model_dump(mode="json"),
            status_code=202,
            headers={"Location": f"/v1/jobs/{job.id}"},
        )
