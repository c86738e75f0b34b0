"""Sans-IO: each API call as an HTTP request and a gRPC request, plus the parsers that turn
either reply into the same typed result. The transports only move bytes; the clients only
pick a call. Nothing here does I/O."""

from __future__ import annotations

import base64
import io
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from PIL import Image

from tessera_client.errors import InvalidRequest, from_code_name
from tessera_client.types import (
    TERMINAL_STATES,
    Embeddings,
    GeneratedImages,
    Images,
    Job,
    Latent,
    ModelInfo,
    Progress,
    ProgressEvent,
    TokenGrid,
    Tokenization,
)
from tessera_client.v1 import common_pb2, generation_pb2, prior_pb2, tokenizer_pb2

T = TypeVar("T")
ImageInput = bytes | str | Path | Image.Image


def _option_names(message: Any, *required: str) -> tuple[str, ...]:
    """A request message's optional fields, in proto order: every field but the ones a call
    takes as its own arguments. Read from the shipped descriptor, so a field added to the
    proto needs no edit here."""
    return tuple(f.name for f in message.DESCRIPTOR.fields if f.name not in required)


# The options ``generate`` / ``submit`` (and ``variations``) accept, besides the prompt (image).
GENERATION_FIELDS = _option_names(generation_pb2.GenerateRequest, "prompt")
VARIATION_FIELDS = _option_names(generation_pb2.VariationsRequest, "image")


@dataclass(frozen=True)
class HTTPRequest:
    method: str
    path: str
    json: dict | None = None
    files: dict | None = None
    data: dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GRPCRequest:
    service: str  # "GenerationService", "TokenizerService", "DetokenizerService", "PriorService"
    method: str
    message: Any


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call, ready for either transport."""

    http: HTTPRequest
    grpc: GRPCRequest
    parse_http: Callable[[Any], T]  # the JSON body → result
    parse_grpc: Callable[[Any], T]  # the response message → result


@dataclass(frozen=True)
class StreamCall:
    """A server stream: SSE over HTTP, a server-streaming RPC over gRPC."""

    http: HTTPRequest
    grpc: GRPCRequest
    parse_sse: Callable[[str, Any], ProgressEvent]  # (event name, JSON data) → event
    parse_grpc: Callable[[Any], ProgressEvent]


# ---------------------------------------------------------------- inputs
def to_image_bytes(image: ImageInput) -> bytes:
    """Bytes pass through; a PIL image is encoded as PNG; a str/Path is read as a file."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(image, str | Path):
        return Path(image).read_bytes()
    raise TypeError(f"expected PNG bytes, a PIL image or a path, got {type(image).__name__}")


def _set_fields(kind: str, names: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(names)
    if unknown:
        raise TypeError(f"unknown {kind} parameters: {sorted(unknown)}")
    return {k: v for k, v in params.items() if v is not None}


def as_image_list(images: Sequence[ImageInput] | ImageInput) -> list[ImageInput]:
    """A single image (bytes, path, PIL image) is accepted where a list is expected."""
    if isinstance(images, bytes | str) or not isinstance(images, Sequence):
        return [images]  # type: ignore[list-item]
    return list(images)


def generation_fields(prompt: str, **params: Any) -> dict[str, Any]:
    """The request fields actually set (None means: the server's default)."""
    return {"prompt": prompt, **_set_fields("generation", GENERATION_FIELDS, params)}


def variation_fields(**params: Any) -> dict[str, Any]:
    """The variation options actually set (the image travels apart)."""
    return _set_fields("variation", VARIATION_FIELDS, params)


def _job_path(job_id: str, suffix: str = "") -> str:
    if not job_id:
        raise InvalidRequest("job id is empty", code="invalid_argument")
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- result parsers
def images_from_json(body: dict) -> GeneratedImages:
    """OpenAI images response (+ seed/route/model) → GeneratedImages (``url`` items skipped)."""
    pngs = [base64.b64decode(d["b64_json"]) for d in body.get("data", []) if d.get("b64_json")]
    return GeneratedImages(
        png_bytes=pngs,
        seed=body.get("seed", 0),
        route=body.get("route", ""),
        model=body.get("model") or "",
        elapsed_ms=body.get("elapsed_ms") or 0.0,
    )


def images_from_proto(msg: generation_pb2.GenerateResponse) -> GeneratedImages:
    return GeneratedImages(
        png_bytes=[img.png for img in msg.images],
        seed=msg.seed,
        route=msg.route,
        model=msg.model,
        elapsed_ms=msg.elapsed_ms,
    )


def variations_from_proto(msg: generation_pb2.VariationsResponse) -> GeneratedImages:
    return images_from_proto(msg.result)


def job_from_json(body: dict) -> Job:
    result = body.get("result")
    return Job(
        id=body["id"],
        state=body["state"],
        priority=body.get("priority", "normal"),
        attempts=body.get("attempts", 0),
        created_at=body.get("created_at"),
        started_at=body.get("started_at"),
        finished_at=body.get("finished_at"),
        result_expires_at=body.get("result_expires_at"),
        result=images_from_json(result) if result else None,
        error=body.get("error") or None,
        progress=Progress(**(body.get("progress") or {})),
        cancel_requested=bool(body.get("cancel_requested", False)),
    )


def job_from_proto(msg: generation_pb2.Job) -> Job:
    def when(t: float) -> float | None:
        return t or None  # the proto uses 0 for "not reached"

    return Job(
        id=msg.id,
        state=msg.state,
        priority=msg.priority or "normal",
        attempts=msg.attempts,
        created_at=when(msg.created_at),
        started_at=when(msg.started_at),
        finished_at=when(msg.finished_at),
        result_expires_at=when(msg.result_expires_at),
        result=images_from_proto(msg.result) if msg.HasField("result") else None,
        error=msg.error or None,
        progress=_progress_from_proto(msg.progress),
    )


def job_reply_from_proto(
    msg: generation_pb2.SubmitJobResponse
    | generation_pb2.GetJobResponse
    | generation_pb2.CancelJobResponse,
) -> Job:
    """SubmitJob, GetJob and CancelJob answer with the job, wrapped."""
    return job_from_proto(msg.job)


def _progress_from_proto(msg: common_pb2.Progress) -> Progress:
    return Progress(step=msg.step, total_steps=msg.total_steps, stage=msg.stage)


def job_event_from_sse(event: str, data: Any) -> ProgressEvent:
    """``GET /v1/jobs/{id}/events``: ``progress`` events, one ``done`` event, or ``error``."""
    if event == "error":
        raise from_code_name(str(data.get("code", "internal")), str(data.get("message", "")))
    if event == "done":
        job = job_from_json(data)
        return ProgressEvent(
            progress=job.progress, job_id=job.id, state=job.state, job=job, done=True
        )
    previews = [base64.b64decode(p["b64_png"]) for p in data.get("previews", [])]
    return ProgressEvent(
        progress=Progress(**(data.get("progress") or {})),
        preview_png_bytes=previews,
        job_id=data.get("id"),
        state=data.get("state"),
    )


def job_event_from_proto(msg: generation_pb2.WatchJobResponse) -> ProgressEvent:
    done = msg.job.state in TERMINAL_STATES
    return ProgressEvent(
        progress=_progress_from_proto(msg.job.progress),
        preview_png_bytes=[p.png for p in msg.previews],
        job_id=msg.job.id,
        state=msg.job.state,
        job=job_from_proto(msg.job) if done else None,
        done=done,
    )


def generate_event_from_proto(msg: generation_pb2.GenerateStreamResponse) -> ProgressEvent:
    done = msg.HasField("result")
    return ProgressEvent(
        progress=_progress_from_proto(msg.progress),
        preview_png_bytes=[p.png for p in msg.previews],
        result=images_from_proto(msg.result) if done else None,
        done=done,
    )


def _embeddings_from_json(body: dict) -> Embeddings:
    return Embeddings(vectors=body["embeddings"], dim=body["dim"])


def _embeddings_from_proto(
    msg: prior_pb2.EmbedTextResponse | prior_pb2.EmbedImageResponse,
) -> Embeddings:
    vectors = [list(e.values) for e in msg.embeddings]
    return Embeddings(vectors=vectors, dim=msg.embeddings[0].dim if msg.embeddings else 0)


# ---------------------------------------------------------------- calls
def generate(fields: dict[str, Any]) -> Call[GeneratedImages]:
    return Call(
        HTTPRequest("POST", "/v1/images/generations", json=fields),
        GRPCRequest("GenerationService", "Generate", generation_pb2.GenerateRequest(**fields)),
        images_from_json,
        images_from_proto,
    )


def generate_stream(fields: dict[str, Any]) -> StreamCall:
    # Over HTTP the client runs a job and streams its events instead (no SSE endpoint for a
    # plain generation); the HTTP half here is unused.
    return StreamCall(
        HTTPRequest("POST", "/v1/jobs", json=fields),
        GRPCRequest(
            "GenerationService",
            "GenerateStream",
            generation_pb2.GenerateStreamRequest(request=generation_pb2.GenerateRequest(**fields)),
        ),
        job_event_from_sse,
        generate_event_from_proto,
    )


def variations(image: ImageInput, fields: dict[str, Any]) -> Call[GeneratedImages]:
    png = to_image_bytes(image)
    form = {k: str(v) for k, v in fields.items()}
    return Call(
        HTTPRequest(
            "POST",
            "/v1/images/variations",
            files={"image": ("image.png", png, "image/png")},
            data=form,
        ),
        GRPCRequest(
            "GenerationService", "Variations", generation_pb2.VariationsRequest(image=png, **fields)
        ),
        images_from_json,
        variations_from_proto,
    )


def submit(fields: dict[str, Any], priority: str, idempotency_key: str | None) -> Call[Job]:
    """Without an idempotency key a fresh one is made per call, so the call's own retries can
    never create a second job."""
    idempotency_key = idempotency_key or uuid.uuid4().hex
    msg = generation_pb2.SubmitJobRequest(
        request=generation_pb2.GenerateRequest(**fields),
        idempotency_key=idempotency_key,
        priority=priority,
    )
    return Call(
        HTTPRequest(
            "POST",
            "/v1/jobs",
            json={**fields, "priority": priority},
            headers={"Idempotency-Key": idempotency_key},
        ),
        GRPCRequest("GenerationService", "SubmitJob", msg),
        job_from_json,
        job_reply_from_proto,
    )


def _job_call(http_method: str, rpc: str, request: Any, job_id: str) -> Call[Job]:
    """A call on one job by id, answered with the job."""
    return Call(
        HTTPRequest(http_method, _job_path(job_id)),
        GRPCRequest("GenerationService", rpc, request(id=job_id)),
        job_from_json,
        job_reply_from_proto,
    )


def get_job(job_id: str) -> Call[Job]:
    return _job_call("GET", "GetJob", generation_pb2.GetJobRequest, job_id)


def cancel_job(job_id: str) -> Call[Job]:
    return _job_call("DELETE", "CancelJob", generation_pb2.CancelJobRequest, job_id)


def watch_job(job_id: str) -> StreamCall:
    return StreamCall(
        HTTPRequest("GET", _job_path(job_id, "/events")),
        GRPCRequest("GenerationService", "WatchJob", generation_pb2.WatchJobRequest(id=job_id)),
        job_event_from_sse,
        job_event_from_proto,
    )


def tokenize(
    images: Sequence[ImageInput] | ImageInput, resize: bool, return_latents: bool
) -> Call[Tokenization]:
    data = [to_image_bytes(i) for i in as_image_list(images)]

    def parse_http(body: dict) -> Tokenization:
        return Tokenization(
            grids=[TokenGrid(**g) for g in body["grids"]],
            codebook_size=body["codebook_size"],
            latents=[Latent(**z) for z in body.get("latents") or []],
        )

    def parse_grpc(msg: tokenizer_pb2.TokenizeResponse) -> Tokenization:
        return Tokenization(
            grids=[
                TokenGrid(tokens=list(g.tokens), height=g.height, width=g.width) for g in msg.grids
            ],
            codebook_size=msg.codebook_size,
            latents=[Latent(values=list(z.values), shape=list(z.shape)) for z in msg.latents],
        )

    return Call(
        HTTPRequest(
            "POST",
            "/v1/tokenize",
            json={
                "images": [_b64(d) for d in data],
                "resize": resize,
                "return_latents": return_latents,
            },
        ),
        GRPCRequest(
            "TokenizerService",
            "Tokenize",
            tokenizer_pb2.TokenizeRequest(
                images=data, resize=resize, return_latents=return_latents
            ),
        ),
        parse_http,
        parse_grpc,
    )


def detokenize(
    grids: Sequence[TokenGrid | dict], latents: Sequence[Latent | dict], quantize: bool
) -> Call[Images]:
    grids = [g if isinstance(g, TokenGrid) else TokenGrid(**g) for g in grids]
    latents = [z if isinstance(z, Latent) else Latent(**z) for z in latents]
    msg = tokenizer_pb2.DetokenizeRequest(
        grids=[common_pb2.TokenGrid(**g.model_dump()) for g in grids],
        latents=[common_pb2.Tensor(**z.model_dump()) for z in latents],
        quantize=quantize,
    )
    body = {
        "grids": [g.model_dump() for g in grids],
        "latents": [z.model_dump() for z in latents],
        "quantize": quantize,
    }
    return Call(
        HTTPRequest("POST", "/v1/detokenize", json=body),
        GRPCRequest("DetokenizerService", "Detokenize", msg),
        lambda b: Images(png_bytes=images_from_json(b).png_bytes),
        lambda m: Images(png_bytes=[img.png for img in m.images]),
    )


def embed(
    texts: Sequence[str] | None, images: Sequence[ImageInput] | ImageInput | None
) -> Call[Embeddings]:
    if (texts is None) == (images is None):
        raise TypeError("embed() takes texts=... or images=..., not both")
    if texts is not None:
        if isinstance(texts, str):
            texts = [texts]
        return Call(
            HTTPRequest("POST", "/v1/embeddings/text", json={"texts": list(texts)}),
            GRPCRequest("PriorService", "EmbedText", prior_pb2.EmbedTextRequest(texts=list(texts))),
            _embeddings_from_json,
            _embeddings_from_proto,
        )
    data = [to_image_bytes(i) for i in as_image_list(images)]
    return Call(
        HTTPRequest("POST", "/v1/embeddings/image", json={"images": [_b64(d) for d in data]}),
        GRPCRequest("PriorService", "EmbedImage", prior_pb2.EmbedImageRequest(images=data)),
        _embeddings_from_json,
        _embeddings_from_proto,
    )


def list_models() -> Call[list[ModelInfo]]:
    return Call(
        HTTPRequest("GET", "/v1/models"),
        GRPCRequest("GenerationService", "ListModels", generation_pb2.ListModelsRequest()),
        lambda b: [
            ModelInfo(id=m["id"], routes=m.get("routes", []), image_size=m.get("image_size", 0))
            for m in b.get("data", [])
        ],
        lambda m: [
            ModelInfo(id=x.id, routes=list(x.routes), image_size=x.image_size) for x in m.models
        ],
    )


def parse_sse_data(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {}
