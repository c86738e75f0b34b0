"""The public HTTP API of the gateway: every endpoint, built over one Gateway instance.

``build_http_app(gateway)`` is called by Serve in the replica, after the Gateway's
constructor (``__serve_build_asgi_app__``), so each handler closes over the gateway it serves
and the jobs router gets the gateway's queue and checks injected, with no module globals.
The app's shell (error bodies, API key) is :mod:`tessera.common.http`.
"""

# No `from __future__ import annotations` here: FastAPI resolves the handlers' annotations
# (UploadFile, Form) at definition time.

import asyncio
import base64
import binascii
import math
import time
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tessera.common import metrics
from tessera.common.errors import InvalidArgument
from tessera.common.http import create_app
from tessera.common.limits import (
    FLOAT32_MAX,
    MAX_CODEBOOK_SIZE,
    MAX_DATA_URL_PREFIX_CHARS,
    MAX_GRID_SIDE,
    MAX_GUIDANCE,
    MAX_IMAGE_B64_CHARS,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_SIDE,
    MAX_IMAGES_PER_REQUEST,
    MAX_ITEMS_PER_CALL,
    MAX_LATENT_VALUES,
    MAX_MODEL_NAME_CHARS,
    MAX_SEED,
    MAX_STEPS,
    MAX_TEXTS_PER_CALL,
)
from tessera.common.serving import call
from tessera.gateway.edits import add_edit_routes
from tessera.gateway.observed import observed
from tessera.gateway.playground import add_playground
from tessera.jobs.api import build_jobs_router
from tessera.routes.schemas import (
    SIZE_DESCRIPTION,
    SIZE_PATTERN,
    GenerationParams,
    ImageData,
    ImagesResponse,
    Prompt,
    VariationParams,
    validate,
)
from tessera.v1 import common_pb2, generation_pb2, prior_pb2, tokenizer_pb2

READY_TIMEOUT_S = 5.0  # /readyz: how long a model service may take to answer its ping


def build_http_app(gateway: Any) -> FastAPI:
    """The FastAPI app of ``gateway`` (a :class:`tessera.gateway.deployment.Gateway`)."""
    app = create_app(
        title="Tessera",
        version="1",
        description="Text-to-image generation (routes `ar`, `unclip`, `pixel`, `mixed`), "
        "instruction edits and captions.",
    )
    handles = gateway.handles
    app.include_router(
        build_jobs_router(
            gateway.require_job_queue,
            check=gateway.check_job_params,
            check_edit=gateway.check_edit_job,
        )
    )

    # ---------------------------------------------------------------- images
    @app.post("/v1/images/generations", response_model=ImagesResponse, tags=["images"])
    async def generations(body: GenerationParams) -> ImagesResponse:
        """OpenAI-compatible image generation (plus `route`, `seed`, sampling fields)."""
        async with observed(body.route, "http"):
            res = await gateway.pipelines.generate(body)
            metrics.add_images(body.route, len(res.images))
            return images_response(res, body.response_format)

    @app.post("/v1/images/variations", response_model=ImagesResponse, tags=["images"])
    async def variations(
        image: UploadFile = File(
            ...,
            description=f"a PNG or JPEG, at most {MAX_IMAGE_BYTES} bytes and {MAX_IMAGE_SIDE} "
            "pixels a side; bytes that are not such an image answer 400",
        ),
        n: int = Form(1, ge=1, le=MAX_IMAGES_PER_REQUEST),
        size: str = Form(None, pattern=SIZE_PATTERN.pattern, description=SIZE_DESCRIPTION),
        response_format: Literal["b64_json", "url"] = Form("b64_json"),
        model: str = Form(None, max_length=MAX_MODEL_NAME_CHARS),
        user: str = Form(None, max_length=256),
        seed: int = Form(None, ge=0, le=MAX_SEED),
        guidance_scale: float = Form(None, ge=0.0, le=MAX_GUIDANCE),
        steps: int = Form(
            None,
            ge=1,
            le=MAX_STEPS,
            description="diffusion steps; a bundle whose decoder has fewer timesteps allows "
            "fewer (400 with its bound)",
        ),
    ) -> ImagesResponse:
        """OpenAI-compatible variations: image → CLIP embedding → decoder → de-tokenizer.

        The form fields carry the bounds of ``VariationParams`` (which validates them again,
        with the same rules as the gRPC Variations method). They are typed without ``None``:
        a multipart form has no null, an absent field is the default."""
        async with observed("variations", "http"):
            fields = {
                "n": n,
                "size": size,
                "response_format": response_format,
                "model": model,
                "user": user,
                "seed": seed,
                "guidance_scale": guidance_scale,
                "steps": steps,
            }
            params = validate(VariationParams, {k: v for k, v in fields.items() if v is not None})
            data = await image.read(MAX_IMAGE_BYTES + 1)  # one byte over: "too large" below
            res = await gateway.pipelines.variations(data, params)
            metrics.add_images("variations", len(res.images))
            return images_response(res, params.response_format)

    add_edit_routes(app, gateway)  # /v1/images/edits and /v1/images/captions (mixed model)

    # ---------------------------------------------------------------- components
    @app.post("/v1/tokenize", tags=["components"])
    async def tokenize(body: TokenizeBody) -> dict:
        async with observed("tokenize", "http"):
            req = tokenizer_pb2.TokenizeRequest(
                images=[decode_b64(b) for b in body.images],
                resize=body.resize,
                return_latents=body.return_latents,
            )
            res = await call(handles.require("tokenizer").Tokenize, req)
            out: dict = {
                "codebook_size": res.codebook_size,
                "kind": res.kind or "vq",
                "grids": [
                    {"tokens": list(g.tokens), "height": g.height, "width": g.width}
                    for g in res.grids
                ],
            }
            if body.return_latents or res.latents:  # a kl tokenizer answers with latents only
                out["latents"] = [
                    {"values": list(z.values), "shape": list(z.shape)} for z in res.latents
                ]
            return out

    @app.post("/v1/detokenize", tags=["components"])
    async def detokenize(body: DetokenizeBody) -> dict:
        async with observed("detokenize", "http"):
            req = tokenizer_pb2.DetokenizeRequest(
                grids=[common_pb2.TokenGrid(**g.model_dump()) for g in body.grids],
                latents=[common_pb2.Tensor(**z.model_dump()) for z in body.latents],
                quantize=body.quantize,
            )
            res = await call(handles.require("detokenizer").Detokenize, req)
            return images_response(
                generation_pb2.GenerateResponse(images=res.images), "b64_json"
            ).model_dump(include={"data"})

    @app.post("/v1/embeddings/text", tags=["components"])
    async def embed_text(body: EmbedTextBody) -> dict:
        async with observed("embed_text", "http"):
            req = prior_pb2.EmbedTextRequest(texts=body.texts)
            return embeddings_body(await call(handles.require("prior").EmbedText, req))

    @app.post("/v1/embeddings/image", tags=["components"])
    async def embed_image(body: EmbedImageBody) -> dict:
        async with observed("embed_image", "http"):
            req = prior_pb2.EmbedImageRequest(images=[decode_b64(b) for b in body.images])
            return embeddings_body(await call(handles.require("prior").EmbedImage, req))

    # ---------------------------------------------------------------- meta
    @app.get("/v1/models", tags=["meta"])
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": info.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "tessera",
                    "routes": list(info.routes),
                    "image_size": info.image_size,
                    "family": info.family,
                    "edits": info.edits,
                    "captions": info.edits,
                }
                for info in gateway.pipelines.infos
            ],
        }

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["meta"])
    async def readyz() -> JSONResponse:
        """Ready when every model service answers a ping within READY_TIMEOUT_S (an extra
        bundle's services as ``<service>@<bundle>``)."""
        served = dict(handles.items())
        for bundle, pipelines in gateway.pipelines.peers.items():
            served.update({f"{name}@{bundle}": h for name, h in pipelines.handles.items()})
        checks = await asyncio.gather(
            *(asyncio.wait_for(h.ping.remote(), READY_TIMEOUT_S) for h in served.values()),
            return_exceptions=True,
        )
        status = {
            name: "unavailable" if isinstance(check, BaseException) else "ok"
            for name, check in zip(served, checks, strict=True)
        }
        ready = all(v == "ok" for v in status.values())
        return JSONResponse({"ready": ready, "services": status}, status_code=200 if ready else 503)

    # ---------------------------------------------------------------- the web playground
    add_playground(app)  # `/`, `/playground` and `/playground/static/*`, open without a key
    return app


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


def embeddings_body(res: prior_pb2.EmbedTextResponse | prior_pb2.EmbedImageResponse) -> dict:
    return {"embeddings": [list(e.values) for e in res.embeddings], "dim": res.embeddings[0].dim}


# ---- request/response bodies of the component endpoints ----------------------------------
# Each states in its schema every bound the server checks (tests/integration/test_fuzz_http.py
# holds the server to it). A bound that depends on the served bundle (its image size, grid,
# codebook, latent channels) is stated as its static maximum, and the field's description
# says what the bundle decides.
B64_PATTERN = (
    f"^(data:[^,]{{0,{MAX_DATA_URL_PREFIX_CHARS - 6}}},)?"
    "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
)
ImageB64 = Annotated[
    str,
    Field(
        max_length=MAX_IMAGE_B64_CHARS,
        pattern=B64_PATTERN,
        description=f"a base64 PNG or JPEG (or a data: URL of one): at most {MAX_IMAGE_BYTES} "
        f"bytes decoded and {MAX_IMAGE_SIDE} pixels a side; bytes that are not such an image "
        "answer 400",
    ),
]
Token = Annotated[int, Field(ge=0, le=MAX_CODEBOOK_SIZE - 1)]
Float32 = Annotated[float, Field(ge=-FLOAT32_MAX, le=FLOAT32_MAX, allow_inf_nan=False)]
Dim = Annotated[int, Field(ge=1, le=MAX_LATENT_VALUES)]


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[ImageB64] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)
    resize: bool = Field(
        default=True,
        description="resize to the model's size; false: each image must already be "
        "image_size x image_size (GET /v1/models), else 400",
    )
    return_latents: bool = False


class GridBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[Token] = Field(
        max_length=MAX_GRID_SIDE * MAX_GRID_SIDE,
        description="height*width token ids, row-major; each below the bundle's codebook_size "
        "(POST /v1/tokenize answers it), else 400",
    )
    height: int = Field(
        ge=1, le=MAX_GRID_SIDE, description="the bundle's grid height (a tokenize grid's)"
    )
    width: int = Field(
        ge=1, le=MAX_GRID_SIDE, description="the bundle's grid width (a tokenize grid's)"
    )

    @model_validator(mode="after")
    def _tokens_fill_the_grid(self) -> "GridBody":
        if len(self.tokens) != self.height * self.width:
            raise ValueError(
                f"{len(self.tokens)} tokens; a {self.height}x{self.width} grid needs "
                f"{self.height * self.width}"
            )
        return self


class LatentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: list[Float32] = Field(
        max_length=MAX_LATENT_VALUES, description="prod(shape) finite values, row-major"
    )
    shape: list[Dim] = Field(
        min_length=3,
        max_length=3,
        description="[channels, height, width]: the bundle's latent shape (a tokenize "
        "response's latents shape), else 400",
    )

    @model_validator(mode="after")
    def _values_fill_the_shape(self) -> "LatentBody":
        cells = math.prod(self.shape)
        if cells != len(self.values):
            raise ValueError(f"{len(self.values)} values; shape {self.shape} needs {cells}")
        return self


class DetokenizeBody(BaseModel):
    """Either grids or latents: exactly one of the two is non-empty."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["grids"],
                    "properties": {"grids": {"minItems": 1}, "latents": {"maxItems": 0}},
                },
                {
                    "required": ["latents"],
                    "properties": {"latents": {"minItems": 1}, "grids": {"maxItems": 0}},
                },
            ]
        },
    )
    grids: list[GridBody] = Field(default_factory=list, max_length=MAX_ITEMS_PER_CALL)
    latents: list[LatentBody] = Field(default_factory=list, max_length=MAX_ITEMS_PER_CALL)
    quantize: bool = True

    @model_validator(mode="after")
    def _grids_or_latents(self) -> "DetokenizeBody":
        if bool(self.grids) == bool(self.latents):
            raise ValueError("set either grids or latents (one of them, not empty)")
        return self


class EmbedTextBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[Prompt] = Field(min_length=1, max_length=MAX_TEXTS_PER_CALL)


class EmbedImageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[ImageB64] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)
