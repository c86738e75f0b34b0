"""Sans-IO: each API call as an HTTP request and a gRPC request, with the parser
(``_parse``) that turns either reply into the same typed result. The transports only move
bytes; the clients only pick a call. Nothing here does I/O."""

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

from tessera_client._parse import (
    embeddings_from_json,
    embeddings_from_proto,
    generate_event_from_proto,
    images_from_json,
    images_from_proto,
    job_event_from_proto,
    job_event_from_sse,
    job_from_json,
    job_reply_from_proto,
    variations_from_proto,
)
from tessera_client.errors import InvalidRequest
from tessera_client.types import (
    Embeddings,
    GeneratedImages,
    Images,
    Job,
    Latent,
    ModelInfo,
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
            kind=body.get("kind") or "vq",
        )

    def parse_grpc(msg: tokenizer_pb2.TokenizeResponse) -> Tokenization:
        return Tokenization(
            grids=[
                TokenGrid(tokens=list(g.tokens), height=g.height, width=g.width) for g in msg.grids
            ],
            codebook_size=msg.codebook_size,
            latents=[Latent(values=list(z.values), shape=list(z.shape)) for z in msg.latents],
            kind=msg.kind or "vq",
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
            embeddings_from_json,
            embeddings_from_proto,
        )
    data = [to_image_bytes(i) for i in as_image_list(images)]
    return Call(
        HTTPRequest("POST", "/v1/embeddings/image", json={"images": [_b64(d) for d in data]}),
        GRPCRequest("PriorService", "EmbedImage", prior_pb2.EmbedImageRequest(images=data)),
        embeddings_from_json,
        embeddings_from_proto,
    )


def list_models() -> Call[list[ModelInfo]]:
    return Call(
        HTTPRequest("GET", "/v1/models"),
        GRPCRequest("GenerationService", "ListModels", generation_pb2.ListModelsRequest()),
        lambda b: [
            ModelInfo(
                id=m["id"],
                routes=m.get("routes", []),
                image_size=m.get("image_size", 0),
                edits=bool(m.get("edits", False)),
            )
            for m in b.get("data", [])
        ],
        lambda m: [
            ModelInfo(id=x.id, routes=list(x.routes), image_size=x.image_size, edits=x.edits)
            for x in m.models
        ],
    )


def parse_sse_data(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return {}
