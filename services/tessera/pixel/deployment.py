"""PixelModel deployment: text -> images one sub-pixel at a time, continuously batched,
streamed row by row, cancellable.

It serves through the LM's engine (``tessera.pixel.engine.PixelSampler``, a
``ContinuousSampler``): requests join the running batch at the next sub-pixel and leave when
their last one is drawn. A bundle without a ``pixel`` component still starts this replica
(every registered service is deployed); its calls then answer NOT_FOUND and the gateway does
not offer the route.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.checkpoint import read_bundle_index
from tessera.common.engine_service import EngineService
from tessera.common.errors import InvalidArgument, NotFound
from tessera.common.images import encode_png
from tessera.common.limits import (
    MAX_PIXEL_IMAGES_PER_CALL,
    MAX_PIXEL_TOP_K,
    MAX_PROMPT_CHARS,
)
from tessera.common.protos import check_count, check_prompt
from tessera.lm.options import sampling_fields, sampling_params
from tessera.lm.sampling import SamplingParams
from tessera.pixel.engine import PixelSampler, to_uint8
from tessera.v1 import common_pb2, pixel_pb2

SAMPLING_FIELDS = sampling_fields(pixel_pb2.SamplePixelsRequest)
DEFAULT_MAX_ROWS = 64  # cache rows: 32 guided images


def images_to_proto(pixels: torch.Tensor) -> list[common_pb2.Image]:
    """(n, S, S, 3) intensities, -1 not sampled yet (white) -> PNG images."""
    arrays = to_uint8(pixels)
    side = arrays.shape[1]
    return [common_pb2.Image(png=encode_png(a), width=side, height=side) for a in arrays]


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class PixelModel(EngineService):
    """``max_rows``: KV-cache rows shared by running images (a guided image takes two); each
    row's cache is bounded by the model's attention window, not the image's length."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model = None
        if "pixel" not in read_bundle_index(Path(bundle_dir))["components"]:
            self.model_loaded = True  # nothing to load: calls answer NOT_FOUND
            return
        self.model = self.load(bundle_dir, "pixel", device)
        self.image_size = self.model.config.image_size
        self.start_engine(PixelSampler, self.model, DEFAULT_MAX_ROWS, 2 * MAX_PIXEL_IMAGES_PER_CALL)

    def check_health(self) -> None:
        if self.model is None:
            return
        super().check_health()

    def reconfigure(self, user_config: dict) -> None:
        if self.model is not None:
            super().reconfigure(user_config)

    async def stats(self) -> dict:
        if self.model is None:
            return {"running_rows": 0, "running": 0, "waiting": 0, "steps": 0}
        return await super().stats()

    def _params(self, request: pixel_pb2.SamplePixelsRequest) -> tuple[list[SamplingParams], int]:
        if self.model is None:
            raise NotFound("this bundle has no pixel component")
        check_prompt("prompt", request.prompt, MAX_PROMPT_CHARS)
        n = request.n or 1
        check_count("n", n, 1, MAX_PIXEL_IMAGES_PER_CALL)
        return sampling_params(request, SAMPLING_FIELDS, MAX_PIXEL_TOP_K, n)

    async def SamplePixels(
        self, request: pixel_pb2.SamplePixelsRequest
    ) -> pixel_pb2.SamplePixelsResponse:
        params, seed = self._params(request)
        pixels = await self._sample(request.prompt, params)
        return pixel_pb2.SamplePixelsResponse(images=images_to_proto(pixels), seed=seed)

    async def _sample(
        self,
        prompt: str,
        params: list[SamplingParams],
        on_progress: Callable[[int, torch.Tensor], bool] | None = None,
        every: int = 48,
    ) -> torch.Tensor:
        text = await asyncio.to_thread(self.text_encoder.encode, [prompt] * len(params))
        metrics.observe_batch("PixelModel", self.engine.running_rows + len(params))
        future = self.engine.submit(text.to(self.device), params, on_progress, every)
        # Not counted in ray_tessera_lm_tokens_total: that metric is the ar LM's VQ tokens.
        return await asyncio.wrap_future(future)

    async def SamplePixelsStream(
        self, stream_request: pixel_pb2.SamplePixelsStreamRequest
    ) -> AsyncIterator[pixel_pb2.SamplePixelsStreamResponse]:
        """The partial images every ``stream_every`` pixel rows (rows not sampled yet are
        white); closing the stream cancels the sampling at its next report."""
        request = stream_request.request
        params, seed = self._params(request)
        if stream_request.stream_every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        S = self.image_size
        total = 3 * S * S
        every = 3 * S * min(stream_request.stream_every or 1, S)
        sampling = self.stream(
            lambda on_progress: self._sample(request.prompt, params, on_progress, every),
            lambda done, pixels: (done, pixels) if done < total else None,
        )
        async with aclosing(sampling) as events:
            async for final, item in events:
                done, pixels = (total, item) if final else item
                yield pixel_pb2.SamplePixelsStreamResponse(
                    progress=common_pb2.Progress(step=done, total_steps=total, stage="pixel"),
                    images=images_to_proto(pixels),
                    done=final,
                    seed=seed,
                )
