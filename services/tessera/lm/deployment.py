"""LanguageModel deployment: text → image token grids, batched, streamed, cancellable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.errors import InvalidArgument
from tessera.common.protos import check_count, check_range, grid_to_proto
from tessera.common.serving import (
    BatchKnobs,
    batched,
    load_model,
    resolve_seed,
    split_results,
    stream_from_thread,
)
from tessera.common.text_encoder import shared_text_encoder
from tessera.lm.sampling import SamplingParams, sample_tokens
from tessera.v1 import common_pb2, lm_pb2

MAX_IMAGES = 8
MAX_PROMPT_CHARS = 500


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class LanguageModel(BatchKnobs):
    _batched_methods = ("_sample_batch",)

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model, self.device = load_model(bundle_dir, "lm", device)
        self.text_encoder = shared_text_encoder(str(self.device))
        self.grid_size = self.model.config.grid_size
        self.model_loaded = True

    def _params(self, request: lm_pb2.SampleTokensRequest) -> tuple[list[SamplingParams], int]:
        """Validate a request and expand it to one SamplingParams per image."""
        if not request.prompt.strip() or len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument(f"prompt must be 1..{MAX_PROMPT_CHARS} characters")
        n = request.n or 1
        check_count("n", n, 1, MAX_IMAGES)
        fields: dict = {}
        if request.HasField("temperature"):
            check_range("temperature", request.temperature, 0.0, 2.0, open_low=True)
            fields["temperature"] = request.temperature
        if request.HasField("top_k"):
            check_range("top_k", request.top_k, 0, self.model.config.vocab_size)
            fields["top_k"] = request.top_k
        if request.HasField("top_p"):
            check_range("top_p", request.top_p, 0.0, 1.0, open_low=True)
            fields["top_p"] = request.top_p
        if request.HasField("guidance_scale"):
            check_range("guidance_scale", request.guidance_scale, 0.0, 20.0)
            fields["guidance_scale"] = request.guidance_scale
        if request.stream_every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        seed = resolve_seed(request.seed if request.HasField("seed") else None)
        return [SamplingParams(seed=seed + i, **fields) for i in range(n)], seed

    async def SampleTokens(
        self, request: lm_pb2.SampleTokensRequest
    ) -> lm_pb2.SampleTokensResponse:
        params, seed = self._params(request)
        grids = split_results(await self._sample_batch((request.prompt, params)))
        return lm_pb2.SampleTokensResponse(grids=[grid_to_proto(g) for g in grids], seed=seed)

    @batched(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _sample_batch(self, items: list[tuple[str, list[SamplingParams]]]) -> list:
        return await asyncio.to_thread(self._sample_many, items)

    def _sample_many(self, items: list[tuple[str, list[SamplingParams]]]) -> list:
        prompts = [p for prompt, params in items for p in [prompt] * len(params)]
        params = [p for _, ps in items for p in ps]
        metrics.observe_batch("LanguageModel", len(params))
        grids = self._sample(prompts, params, None, 0)
        out, start = [], 0
        for _, ps in items:
            out.append(grids[start : start + len(ps)])
            start += len(ps)
        return out

    @torch.inference_mode()
    def _sample(
        self,
        prompts: list[str],
        params: list[SamplingParams],
        on_progress: Callable[[int, torch.Tensor], bool] | None,
        every: int,
    ) -> torch.Tensor:
        text = self.text_encoder.encode(prompts).to(self.device)
        kwargs = {"progress_every": every} if every else {}
        grids = sample_tokens(self.model, text, params, on_progress=on_progress, **kwargs)
        metrics.add_tokens(int(grids.numel()))
        return grids.cpu()

    async def SampleTokensStream(
        self, request: lm_pb2.SampleTokensRequest
    ) -> AsyncIterator[lm_pb2.SampleTokensEvent]:
        """Partial grids every ``stream_every`` tokens (unsampled positions are -1)."""
        params, seed = self._params(request)
        total = self.grid_size * self.grid_size
        every = request.stream_every or max(1, total // 8)

        def work(emit: Callable[[object], bool]) -> torch.Tensor:
            def on_progress(done: int, tokens: torch.Tensor) -> bool:
                grids = tokens.reshape(-1, self.grid_size, self.grid_size).cpu()
                return emit((done, grids))

            return self._sample([request.prompt] * len(params), params, on_progress, every)

        final = None
        async for item in stream_from_thread(work):
            if isinstance(item, tuple):
                done, grids = item
                yield lm_pb2.SampleTokensEvent(
                    progress=common_pb2.Progress(step=done, total_steps=total, stage="lm"),
                    grids=[grid_to_proto(g) for g in grids],
                    seed=seed,
                )
            else:
                final = item
        yield lm_pb2.SampleTokensEvent(
            progress=common_pb2.Progress(step=total, total_steps=total, stage="lm"),
            grids=[grid_to_proto(g) for g in final],
            done=True,
            seed=seed,
        )
