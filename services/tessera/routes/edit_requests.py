"""Edits and captions at the public edges: gRPC messages → the request models, captions →
their message, a streamed edit, and an edit as an async job's payload.

The gateway (HTTP and gRPC) and the job queue both use these, so every entry point validates
an edit with the same rules (``EditParams``, ``CaptionParams``) before anything runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Base64Bytes

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_IMAGE_BYTES, MAX_JOB_IMAGE_BYTES
from tessera.routes.schemas import (
    Caption,
    CaptionParams,
    EditParams,
    EventCallback,
    GenerationParams,
    StreamEvent,
    proto_fields,
    validate,
    wire_float,
)
from tessera.v1 import common_pb2, generation_pb2


def check_image_bytes(data: bytes, what: str, limit: int = MAX_IMAGE_BYTES) -> None:
    """An uploaded image is not empty and at most ``limit`` bytes (InvalidArgument)."""
    if len(data) > limit:
        raise InvalidArgument(f"{what} is over {limit} bytes, the limit")
    if not data:
        raise InvalidArgument(f"{what} is empty")


def edit_from_proto(msg: generation_pb2.EditRequest) -> tuple[bytes, EditParams, bytes | None]:
    """(source image, params, mask or None) of a gRPC edit, validated with the HTTP rules."""
    params = validate(EditParams, proto_fields(msg, {"prompt": msg.prompt}))
    check_image_bytes(msg.image, "image")
    if msg.mask:
        check_image_bytes(msg.mask, "mask")
    return msg.image, params, (msg.mask or None)  # type: ignore[return-value]


def caption_from_proto(msg: generation_pb2.CaptionRequest) -> CaptionParams:
    """A gRPC caption request's params, validated with the HTTP rules (InvalidArgument)."""
    data = {"n": msg.n or 1, **({"model": msg.model} if msg.model else {})}
    if msg.HasField("temperature"):
        data["temperature"] = wire_float(msg.temperature)
    if msg.HasField("seed"):
        data["seed"] = msg.seed
    params = validate(CaptionParams, data)
    check_image_bytes(msg.image, "image")
    return params  # type: ignore[return-value]


def captions_to_proto(
    captions: list[Caption], model: str, elapsed_ms: float
) -> generation_pb2.CaptionResponse:
    return generation_pb2.CaptionResponse(
        captions=[generation_pb2.ImageCaption(text=c.text, score=c.score) for c in captions],
        model=model,
        elapsed_ms=elapsed_ms,
    )


async def stream_events(
    run: Callable[[EventCallback], Awaitable[generation_pb2.GenerateResponse]],
) -> AsyncIterator[StreamEvent]:
    """``run(on_event)``'s progress events as they come, then one event with its result
    (what ``Pipelines.stream`` does for a generation); closing the stream cancels the run."""
    queue: asyncio.Queue = asyncio.Queue()

    async def on_event(event: StreamEvent) -> bool:
        await queue.put(event)
        return True

    task = asyncio.create_task(run(on_event))
    task.add_done_callback(lambda _: queue.put_nowait(None))
    try:
        while (event := await queue.get()) is not None:
            yield event
        yield StreamEvent(
            progress=common_pb2.Progress(step=1, total_steps=1, stage="done"),
            result=task.result(),
        )
    finally:
        task.cancel()


def _job_image_size(data: bytes) -> bytes:
    check_image_bytes(data, "image", MAX_JOB_IMAGE_BYTES)
    return data


JobImage = Annotated[Base64Bytes, AfterValidator(_job_image_size)]


class EditJobRequest(EditParams):
    """An edit as an async job's payload: the params plus the source image and the mask,
    stored with the job (base64 in its JSON), each at most MAX_JOB_IMAGE_BYTES."""

    kind: Literal["edit"] = "edit"
    image: JobImage
    mask: JobImage | None = None

    @property
    def route(self) -> str:
        """The job's route label (metrics): edits count as ``edit``."""
        return "edit"

    def params(self) -> EditParams:
        """The edit's params without the images (what a job view shows)."""
        return EditParams.model_validate(self.model_dump(exclude={"kind", "image", "mask"}))

    @classmethod
    def build(cls, image: bytes, params: EditParams, mask: bytes | None) -> EditJobRequest:
        """The payload of an edit job (InvalidArgument when an image is over the job limit)."""
        check_image_bytes(image, "image", MAX_JOB_IMAGE_BYTES)
        if mask is not None:
            check_image_bytes(mask, "mask", MAX_JOB_IMAGE_BYTES)
        return cls.model_construct(
            **params.model_dump(exclude_unset=True), kind="edit", image=image, mask=mask
        )


JobRequest = GenerationParams | EditJobRequest  # what one job runs


def parse_job_request(raw: str) -> JobRequest:
    """A stored job request (JSON): an edit when it says ``"kind": "edit"``, else a
    generation (jobs stored before edits existed have no kind). Raises ValueError."""
    data = json.loads(raw)
    if isinstance(data, dict) and data.get("kind") == "edit":
        return EditJobRequest.model_validate(data)
    return GenerationParams.model_validate(data)


def job_executor(pipelines: Any) -> Callable[..., Awaitable[generation_pb2.GenerateResponse]]:
    """The job worker's executor over ``pipelines`` (``Pipelines`` or ``ServedModels``): an
    edit job runs ``edit``, any other ``generate``."""

    async def execute(
        request: JobRequest, on_event: EventCallback
    ) -> generation_pb2.GenerateResponse:
        if isinstance(request, EditJobRequest):
            return await pipelines.edit(request.image, request.params(), request.mask, on_event)
        return await pipelines.generate(request, on_event)

    return execute
