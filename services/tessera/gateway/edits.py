"""The mixed-modal model's public HTTP endpoints: instruction edits and captions.

``POST /v1/images/edits`` is OpenAI's images edit endpoint (multipart ``image``, ``prompt``,
optional ``mask``, ``n``, ``size``, ``response_format``, ``model``, ``user``; the official
``openai`` client's ``images.edit`` calls it unmodified) plus Tessera's sampling fields.
``POST /v1/images/captions`` answers captions of an uploaded image, best first, with scores.
Both run ``Pipelines.edit`` / ``Pipelines.caption`` (``routes/mixed.py``); a bundle without a
mixed component answers 404. ``add_edit_routes(app, gateway)`` is called by
``gateway/http.py``'s ``build_http_app``.
"""

# No `from __future__ import annotations` here: FastAPI resolves the handlers' annotations
# (UploadFile, Form) at definition time.

import time
from typing import Any, Literal

from fastapi import FastAPI, File, Form, UploadFile
from pydantic import BaseModel

from tessera.common import metrics
from tessera.common.limits import (
    MAX_CAPTIONS,
    MAX_GUIDANCE,
    MAX_IMAGE_BYTES,
    MAX_IMAGES_PER_REQUEST,
    MAX_MODEL_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    MIN_TEMPERATURE,
)
from tessera.gateway.observed import observed
from tessera.routes.edit_requests import check_image_bytes
from tessera.routes.schemas import (
    NOT_BLANK,
    SIZE_DESCRIPTION,
    SIZE_PATTERN,
    Caption,
    CaptionParams,
    EditParams,
    ImagesResponse,
    validate,
)

IMAGE_DESCRIPTION = (
    f"a PNG of the model's native size (GET /v1/models, image_size), at most {MAX_IMAGE_BYTES} "
    "bytes; another format or size answers 400"
)
MASK_DESCRIPTION = (
    "optional PNG of the image's size with an alpha channel: fully transparent pixels "
    "(alpha 0) mark where the image may change; every token cell without one stays the "
    "source's exactly"
)


class CaptionView(BaseModel):
    text: str
    score: float  # the sum of the caption tokens' log-probabilities (higher is better)


class CaptionsResponse(BaseModel):
    """Captions of one image, best first."""

    created: int
    captions: list[CaptionView]
    model: str
    elapsed_ms: float


async def read_upload(upload: UploadFile | None, what: str) -> bytes | None:
    """An uploaded file's bytes, read one byte over the limit so an oversize upload is a
    400 here (nothing runs), not a truncated image later."""
    if upload is None:
        return None
    data = await upload.read(MAX_IMAGE_BYTES + 1)
    check_image_bytes(data, what)
    return data


def captions_response(captions: list[Caption], model: str, elapsed_ms: float) -> CaptionsResponse:
    return CaptionsResponse(
        created=int(time.time()),
        captions=[CaptionView(text=c.text, score=c.score) for c in captions],
        model=model,
        elapsed_ms=elapsed_ms,
    )


def add_edit_routes(app: FastAPI, gateway: Any) -> None:
    """Register ``/v1/images/edits`` and ``/v1/images/captions`` on ``app`` over ``gateway``."""
    from tessera.gateway.http import images_response  # http.py imports this module

    @app.post("/v1/images/edits", response_model=ImagesResponse, tags=["images"])
    async def edits(
        image: UploadFile = File(..., description=IMAGE_DESCRIPTION),
        prompt: str = Form(
            ...,
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            json_schema_extra={"pattern": NOT_BLANK},
            description='the instruction ("make the circle red"), not blank',
        ),
        mask: UploadFile = File(None, description=MASK_DESCRIPTION),
        n: int = Form(1, ge=1, le=MAX_IMAGES_PER_REQUEST),
        size: str = Form(None, pattern=SIZE_PATTERN.pattern, description=SIZE_DESCRIPTION),
        response_format: Literal["b64_json", "url"] = Form("b64_json"),
        model: str = Form(None, max_length=MAX_MODEL_NAME_CHARS),
        user: str = Form(None, max_length=256),
        seed: int = Form(None, ge=0, le=MAX_SEED),
        guidance_scale: float = Form(
            None, ge=0.0, le=MAX_GUIDANCE, description="guidance on the instruction"
        ),
        image_guidance_scale: float = Form(
            None, ge=0.0, le=MAX_GUIDANCE, description="guidance on the source image"
        ),
        temperature: float = Form(
            None,
            ge=MIN_TEMPERATURE,
            le=MAX_TEMPERATURE,
            description="unset: greedy (every n the same)",
        ),
        top_k: int = Form(None, ge=0, le=MAX_TOP_K, description="0 is off"),
    ) -> ImagesResponse:
        """OpenAI-compatible image edit through the mixed-modal model: source image +
        instruction (+ mask) → edited images. The form fields carry ``EditParams``' bounds
        (validated again there, as gRPC Edit is); an absent field is the default."""
        async with observed("edit", "http"):
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
            source = await read_upload(image, "image")
            mask_bytes = await read_upload(mask, "mask")
            res = await gateway.pipelines.edit(source, params, mask_bytes)
            metrics.add_images("edit", len(res.images))
            return images_response(res, params.response_format)

    @app.post("/v1/images/captions", response_model=CaptionsResponse, tags=["images"])
    async def captions(
        image: UploadFile = File(..., description=IMAGE_DESCRIPTION),
        n: int = Form(1, ge=1, le=MAX_CAPTIONS),
        model: str = Form(None, max_length=MAX_MODEL_NAME_CHARS),
        temperature: float = Form(
            None,
            ge=0.0,
            le=MAX_TEMPERATURE,
            description=(
                f"unset or 0: greedy (one caption, n must be 1); "
                f"otherwise [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]"
            ),
        ),
        seed: int = Form(None, ge=0, le=MAX_SEED),
    ) -> CaptionsResponse:
        """Image → text through the mixed-modal model: ``n`` captions, best first, each with
        its score (the sum of its tokens' log-probabilities)."""
        async with observed("caption", "http"):
            fields = {"n": n, "model": model, "temperature": temperature, "seed": seed}
            params = validate(CaptionParams, {k: v for k, v in fields.items() if v is not None})
            data = await read_upload(image, "image")
            start = time.perf_counter()
            found = await gateway.pipelines.caption(data, params)
            name = gateway.pipelines.for_model(params.model).info.name
            return captions_response(found, name, (time.perf_counter() - start) * 1000)
