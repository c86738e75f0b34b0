"""The ``pixel`` route: PixelModel.SamplePixels, one call (the Image Transformer writes the
image itself, no de-tokenizer). Streamed, each event's previews are the images sampled so far,
complete down to the last finished row."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from tessera.common.errors import Cancelled
from tessera.common.images import decode_image, pixels_to_proto
from tessera.common.serving import call
from tessera.routes.handles import ModelHandles
from tessera.routes.schemas import GenerationParams, passed_options
from tessera.v1 import common_pb2, generation_pb2, pixel_pb2

# The generation request's options that the pixel contract shares, passed on as they are.
PIXEL_SAMPLING_FIELDS = passed_options(pixel_pb2.SamplePixelsRequest)


def pixel_request(params: GenerationParams) -> pixel_pb2.SamplePixelsRequest:
    req = pixel_pb2.SamplePixelsRequest(prompt=params.prompt, n=params.n)
    if params.seed is not None:
        req.seed = params.seed
    return params.set_options(req, PIXEL_SAMPLING_FIELDS)


async def sample_pixels(
    handles: ModelHandles,
    params: GenerationParams,
    on_event: Callable[[generation_pb2.GenerateStreamResponse], Awaitable[bool]] | None,
) -> tuple[list, int]:
    """(pixels, seed) for ``params``: raw ``Pixels``, which ``Pipelines`` encodes (upscaled)
    once, as it does every route's; with ``on_event``, a progress event with the partial
    PNG images after every row (``on_event`` returning False cancels)."""
    req = pixel_request(params)
    if on_event is None:
        res = await call(handles.pixel.SamplePixels, req)
        return _raw(res.images), res.seed
    images, seed = [], 0
    sreq = pixel_pb2.SamplePixelsStreamRequest(request=req, stream_every=1)
    stream = handles.pixel.options(stream=True).SamplePixelsStream.remote(sreq)
    async for ev in stream:
        images, seed = list(ev.images), ev.seed
        if ev.done:
            break
        event = generation_pb2.GenerateStreamResponse(progress=ev.progress, previews=images)
        if not await on_event(event):
            cancel = getattr(stream, "cancel", None)
            if cancel:
                cancel()
            raise Cancelled("generation cancelled")
    return _raw(images), seed


def _raw(images: list[common_pb2.Image]) -> list[common_pb2.Pixels]:
    """The PixelModel's PNGs (tiny: the model's native side) as raw pixels."""
    return [pixels_to_proto(decode_image(img.png, img.width, resize=False)) for img in images]
