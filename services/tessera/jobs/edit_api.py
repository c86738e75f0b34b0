"""``POST /v1/jobs/edits``: an instruction edit as an async job (multipart, as
``POST /v1/images/edits``, plus ``priority`` and the ``Idempotency-Key`` header).

The job's payload carries the source image and the mask (``EditJobRequest``, each at most
MAX_JOB_IMAGE_BYTES), so the worker needs nothing but the queue; progress, previews, results,
cancel and SSE are every job's (``jobs/api.py``). ``check_edit(image, params, mask)`` (the
gateway's) runs before the job is queued: a request that could never run is a 4xx now.
"""

# No `from __future__ import annotations` here: Ray Serve rebuilds the FastAPI routes in the
# replica, where string annotations (Request) no longer resolve.

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from tessera.common.errors import InvalidArgument
from tessera.common.http import error_response
from tessera.common.limits import MAX_JOB_IMAGE_BYTES
from tessera.jobs.redis_retry import store_errors
from tessera.routes.edit_requests import EditJobRequest, check_image_bytes
from tessera.routes.schemas import EditParams, validate

EditCheck = Callable[[bytes, EditParams, bytes | None], None]


FIELDS = tuple(EditParams.model_fields)


def _form_property(prop: dict) -> dict:
    """An EditParams property as a form field: a multipart form has no null, so an optional
    field is its non-null type (absent means unset)."""
    prop = dict(prop)
    for option in prop.pop("anyOf", []):
        if option.get("type") != "null":
            prop = {**option, **prop}
    if prop.get("default", 0) is None:
        del prop["default"]
    return prop


_FORM_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["image", "prompt"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the source PNG"},
        "mask": {"type": "string", "format": "binary", "description": "alpha 0: may change"},
        **{k: _form_property(v) for k, v in EditParams.model_json_schema()["properties"].items()},
        "priority": {"type": "string", "enum": ["normal", "high"], "default": "normal"},
    },
}


async def _read(upload: object, what: str) -> bytes | None:
    """An upload's bytes, one byte over the job limit read so an oversize one is a 400."""
    if upload is None:
        return None
    if not isinstance(upload, UploadFile):
        raise InvalidArgument(f"{what} must be a file part")
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
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
            }
        },
        summary="Submit an edit job",
    )
    async def submit_edit_job(request: Request) -> Response:
        try:
            source, params, mask, priority = await _read_form(request)
            if check_edit is not None:
                check_edit(source, params, mask)
            payload = EditJobRequest.build(source, params, mask)
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


async def _read_form(request: Request) -> tuple[bytes, EditParams, bytes | None, str]:
    """(image, params, mask, priority) of the multipart body; InvalidArgument otherwise.
    Parsed here (not by FastAPI parameters) so the router answers its own 400s."""
    try:
        form = await request.form(max_files=2, max_fields=len(FIELDS) + 4)
    except Exception as e:  # noqa: BLE001 - malformed multipart of any kind
        raise InvalidArgument(f"body must be multipart/form-data: {e}") from e
    texts = {k: v for k, v in form.items() if isinstance(v, str)}
    unknown = set(texts) - set(FIELDS) - {"priority"}
    if unknown:
        raise InvalidArgument(f"unknown fields: {sorted(unknown)}")
    priority = texts.pop("priority", "normal")
    if priority not in ("normal", "high"):
        raise InvalidArgument("priority must be 'normal' or 'high'")
    params = validate(EditParams, texts)
    image = await _read(form.get("image"), "image")
    if image is None:
        raise InvalidArgument("image is required (a multipart file field)")
    return image, params, await _read(form.get("mask"), "mask"), priority  # type: ignore[return-value]
