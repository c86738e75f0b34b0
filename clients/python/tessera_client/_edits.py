"""Sans-IO calls of the mixed-modal model: instruction edits (sync, streamed, as a job) and
captions, each as an HTTP request and a gRPC request with their parsers (as ``_wire``)."""

from __future__ import annotations

import uuid
from typing import Any

from tessera_client._parse import (
    generate_event_from_proto,
    images_from_json,
    images_from_proto,
    job_event_from_sse,
    job_from_json,
    job_reply_from_proto,
)
from tessera_client._wire import (
    Call,
    GRPCRequest,
    HTTPRequest,
    ImageInput,
    StreamCall,
    _option_names,
    _set_fields,
    to_image_bytes,
)
from tessera_client.types import Caption, Captions, GeneratedImages, Job
from tessera_client.v1 import generation_pb2

# The options ``edit`` / ``submit_edit`` and ``caption`` accept besides their inputs.
EDIT_FIELDS = _option_names(generation_pb2.EditRequest, "image", "prompt", "mask")
CAPTION_FIELDS = _option_names(generation_pb2.CaptionRequest, "image")


def edit_fields(**params: Any) -> dict[str, Any]:
    """The edit options actually set (None means: the server's default)."""
    return _set_fields("edit", EDIT_FIELDS, params)


def caption_fields(**params: Any) -> dict[str, Any]:
    return _set_fields("caption", CAPTION_FIELDS, params)


class EditInputs:
    """An edit's source image, instruction and optional mask, as both transports send them."""

    def __init__(
        self, image: ImageInput, prompt: str, mask: ImageInput | None, fields: dict[str, Any]
    ) -> None:
        self.image = to_image_bytes(image)
        self.mask = to_image_bytes(mask) if mask is not None else None
        self.prompt = prompt
        self.fields = fields

    def files(self) -> dict:
        files = {"image": ("image.png", self.image, "image/png")}
        if self.mask is not None:
            files["mask"] = ("mask.png", self.mask, "image/png")
        return files

    def form(self, **extra: str) -> dict[str, str]:
        return {"prompt": self.prompt, **{k: str(v) for k, v in self.fields.items()}, **extra}

    def message(self) -> generation_pb2.EditRequest:
        return generation_pb2.EditRequest(
            image=self.image, prompt=self.prompt, mask=self.mask or b"", **self.fields
        )


def edit(inputs: EditInputs) -> Call[GeneratedImages]:
    return Call(
        HTTPRequest("POST", "/v1/images/edits", files=inputs.files(), data=inputs.form()),
        GRPCRequest("GenerationService", "Edit", inputs.message()),
        images_from_json,
        lambda msg: images_from_proto(msg.result),
    )


def edit_stream(inputs: EditInputs) -> StreamCall:
    # Over HTTP the client runs an edit job and streams its events instead; the HTTP half
    # here is unused (as generate_stream's).
    return StreamCall(
        HTTPRequest("POST", "/v1/jobs/edits", files=inputs.files(), data=inputs.form()),
        GRPCRequest(
            "GenerationService",
            "EditStream",
            generation_pb2.EditStreamRequest(request=inputs.message()),
        ),
        job_event_from_sse,
        generate_event_from_proto,  # EditStreamResponse has GenerateStreamResponse's fields
    )


def submit_edit(inputs: EditInputs, priority: str, idempotency_key: str | None) -> Call[Job]:
    """An edit job (a fresh idempotency key per call when none is given, as ``submit``)."""
    idempotency_key = idempotency_key or uuid.uuid4().hex
    msg = generation_pb2.SubmitJobRequest(
        edit=inputs.message(), idempotency_key=idempotency_key, priority=priority
    )
    return Call(
        HTTPRequest(
            "POST",
            "/v1/jobs/edits",
            files=inputs.files(),
            data=inputs.form(priority=priority),
            headers={"Idempotency-Key": idempotency_key},
        ),
        GRPCRequest("GenerationService", "SubmitJob", msg),
        job_from_json,
        job_reply_from_proto,
    )


def caption(image: ImageInput, fields: dict[str, Any]) -> Call[Captions]:
    png = to_image_bytes(image)

    def parse_http(body: dict) -> Captions:
        return Captions(
            captions=[Caption(text=c["text"], score=c["score"]) for c in body["captions"]],
            model=body.get("model") or "",
            elapsed_ms=body.get("elapsed_ms") or 0.0,
        )

    def parse_grpc(msg: generation_pb2.CaptionResponse) -> Captions:
        return Captions(
            captions=[Caption(text=c.text, score=c.score) for c in msg.captions],
            model=msg.model,
            elapsed_ms=msg.elapsed_ms,
        )

    return Call(
        HTTPRequest(
            "POST",
            "/v1/images/captions",
            files={"image": ("image.png", png, "image/png")},
            data={k: str(v) for k, v in fields.items()},
        ),
        GRPCRequest(
            "GenerationService", "Caption", generation_pb2.CaptionRequest(image=png, **fields)
        ),
        parse_http,
        parse_grpc,
    )
