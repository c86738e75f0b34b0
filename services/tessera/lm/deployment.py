"""LanguageModel deployment: text → image token grids, batched, streamed, cancellable."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.engine_service import EngineService
from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_LM_IMAGES_PER_CALL, MAX_PROMPT_CHARS
from tessera.common.protos import (
    check_count,
    check_prompt,
    grid_to_proto,
    text_states_from_proto,
    text_states_to_proto,
)
from tessera.common.text_encoder import TextBatch
from tessera.lm.engine import ContinuousSampler
from tessera.lm.options import sampling_fields, sampling_params
from tessera.lm.sampling import SamplingParams
from tessera.v1 import common_pb2, lm_pb2

SAMPLING_FIELDS = sampling_fields(lm_pb2.SampleTokensRequest)
DEFAULT_MAX_ROWS = 128  # KV-cache rows: 64 guided images (16 requests x 4 candidates)


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class LanguageModel(EngineService):
    """Requests join one continuously batched sampler (``tessera.lm.engine``): a new request
    starts at the next token step instead of waiting for the running batch to finish.
    ``max_rows``: KV-cache rows shared by running sequences (a guided image takes two)."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model = self.load(bundle_dir, "lm", device)
        self.grid_size = self.model.config.grid_size
        self.start_engine(
            ContinuousSampler, self.model, DEFAULT_MAX_ROWS, 2 * MAX_LM_IMAGES_PER_CALL
        )

    def _params(self, request: lm_pb2.SampleTokensRequest) -> tuple[list[SamplingParams], int]:
        """Validate a request and expand it to one SamplingParams per image."""
        check_prompt("prompt", request.prompt, MAX_PROMPT_CHARS)
        if request.seeds:
            check_count("seeds", len(request.seeds), 1, MAX_LM_IMAGES_PER_CALL)
            if request.HasField("seed") or request.n not in (0, len(request.seeds)):
                raise InvalidArgument(
                    "with seeds, leave seed unset and n unset or equal to the number of seeds"
                )
        n = request.n or len(request.seeds) or 1
        check_count("n", n, 1, MAX_LM_IMAGES_PER_CALL)
        vocab = self.model.config.vocab_size
        return sampling_params(request, SAMPLING_FIELDS, vocab, n, request.seeds)

    async def SampleTokens(
        self, request: lm_pb2.SampleTokensRequest
    ) -> lm_pb2.SampleTokensResponse:
        params, seed = self._params(request)
        text = await self._text(request, len(params))
        grids = await self._sample(params, text)
        response = lm_pb2.SampleTokensResponse(grids=[grid_to_proto(g) for g in grids], seed=seed)
        self._return_states(request, text, response)
        return response

    def _states(self, request: lm_pb2.SampleTokensRequest, n: int) -> TextBatch | None:
        """The prompt's MiniLM states when encoded upstream (Prior.EmbedText), checked with
        the rest of the request; None: this replica encodes the prompt."""
        if not request.HasField("text_states"):
            return None
        if getattr(self.model, "own_text_encoder", None) is not None:
            raise InvalidArgument("this model tokenizes its own prompts; leave text_states unset")
        return text_states_from_proto(request.text_states, n)

    async def _text(self, request: lm_pb2.SampleTokensRequest, n: int) -> TextBatch:
        """The prompt's encoding, ``n`` rows: the request's states, else this replica's
        encoder (cached per prompt)."""
        text = self._states(request, n)
        if text is None:
            text = await asyncio.to_thread(self.text_encoder.encode, [request.prompt] * n)
        return text

    def _return_states(
        self,
        request: lm_pb2.SampleTokensRequest,
        text: TextBatch,
        response: lm_pb2.SampleTokensResponse | lm_pb2.SampleTokensStreamResponse,
    ) -> None:
        """With ``return_states``, the MiniLM states for a downstream reranker (a model that
        tokenizes its own prompts has none to give)."""
        if request.return_states and getattr(self.model, "own_text_encoder", None) is None:
            response.text_states.CopyFrom(text_states_to_proto(text))

    async def _sample(
        self,
        params: list[SamplingParams],
        text: TextBatch,
        on_progress: Callable[[int, torch.Tensor], bool] | None = None,
        every: int = 16,
    ) -> torch.Tensor:
        metrics.observe_batch("LanguageModel", self.engine.running_rows + len(params))
        future = self.engine.submit(text.to(self.device), params, on_progress, every)
        grids = await asyncio.wrap_future(future)
        metrics.add_tokens(int(grids.numel()))
        return grids

    async def SampleTokensStream(
        self, stream_request: lm_pb2.SampleTokensStreamRequest
    ) -> AsyncIterator[lm_pb2.SampleTokensStreamResponse]:
        """Partial grids every ``stream_every`` tokens (unsampled positions are -1); closing
        the stream cancels the sampling at the engine's next step."""
        request = stream_request.request
        params, seed = self._params(request)
        if stream_request.stream_every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        text = await self._text(request, len(params))
        total = self.grid_size * self.grid_size
        every = stream_request.stream_every or max(1, total // 8)
        sampling = self.stream(
            lambda on_progress: self._sample(params, text, on_progress, every),
            lambda done, grids: (done, grids) if done < total else None,
        )
        async with aclosing(sampling) as events:
            async for final, item in events:
                done, grids = (total, item) if final else item
                event = lm_pb2.SampleTokensStreamResponse(
                    progress=common_pb2.Progress(step=done, total_steps=total, stage="lm"),
                    grids=[grid_to_proto(g) for g in grids],
                    done=final,
                    seed=seed,
                )
                if final:
                    self._return_states(request, text, event)
                yield event
