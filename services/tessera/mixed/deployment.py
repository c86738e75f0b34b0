"""MixedModel deployment: text -> grids, instruction edits of a grid, captions of a grid.

Images are sampled through the LM's engine (``tessera.mixed.engine.MixedSampler``, a
``ContinuousSampler``): requests join the running batch at the next cell and leave when their
last one is drawn; a guided sequence takes one cache row per condition prompt (t2i 2, an edit
3, unguided 1). Captions (text out, stopping at ``<eot>``) are a batched ``generate_text``
call per request, in a thread beside the engine. A bundle without a ``mixed`` component still
starts this replica; its calls then answer NOT_FOUND and the gateway offers no edits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import torch
from ray import serve

from tessera.common.checkpoint import read_bundle_index
from tessera.common.device import make_generator
from tessera.common.engine_service import EngineService
from tessera.common.errors import InvalidArgument, NotFound
from tessera.common.limits import (
    MAX_CAPTIONS,
    MAX_GUIDANCE,
    MAX_MIXED_IMAGES_PER_CALL,
    MAX_PROMPT_CHARS,
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    MIN_WIRE_TEMPERATURE,
)
from tessera.common.protos import (
    check_count,
    check_prompt,
    check_range,
    grid_from_proto,
    grid_to_proto,
)
from tessera.common.serving import load_model, resolve_seed
from tessera.mixed.engine import MAX_ROWS_PER_SEQUENCE, MixedSampler
from tessera.mixed.generate import edit_weights, generate_text, text_weights
from tessera.mixed.sequences import Builder, Sequence
from tessera.mixed.text import TextCodec
from tessera.v1 import common_pb2, mixed_pb2

DEFAULT_MAX_ROWS = 48  # KV-cache rows: 16 guided edits
STAGE = "mixed"


def guided_rows(prompts: list[Sequence], weights: list[float]) -> tuple[list, list[float]]:
    """The rows whose weight is not 0 (a row of weight 0 adds nothing to the mix)."""
    kept = [(p, w) for p, w in zip(prompts, weights, strict=True) if w != 0.0] or [
        (prompts[0], 0.0)
    ]
    return [p for p, _ in kept], [w for _, w in kept]


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class MixedModel(EngineService):
    """``max_rows``: KV-cache rows shared by running images (an edit with two guidance
    scales takes three, a guided text -> image two)."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model = None
        if "mixed" not in read_bundle_index(Path(bundle_dir))["components"]:
            self.model_loaded = True  # nothing to load: calls answer NOT_FOUND
            return
        self.model, self.device = load_model(bundle_dir, "mixed", device)
        config = self.model.config
        self.codec = TextCodec.load(Path(bundle_dir) / "mixed", config.text_len)
        self.builder = Builder(config.layout)
        self.grid_size = config.grid_size
        self.blank = [0] * config.layout.n_cells  # a target the prompt never reads
        rows = MAX_ROWS_PER_SEQUENCE * MAX_MIXED_IMAGES_PER_CALL
        self.start_engine(MixedSampler, self.model, DEFAULT_MAX_ROWS, rows)

    def check_health(self) -> None:
        if self.model is not None:
            super().check_health()

    def reconfigure(self, user_config: dict) -> None:
        if self.model is not None:
            super().reconfigure(user_config)

    async def stats(self) -> dict:
        if self.model is None:
            return {"running_rows": 0, "running": 0, "waiting": 0, "steps": 0}
        return await super().stats()

    # ---------------------------------------------------------------- request checks
    def _require(self) -> None:
        if self.model is None:
            raise NotFound("this bundle has no mixed component (no edits, captions or mixed route)")

    def _grid(self, msg: common_pb2.TokenGrid) -> list[int]:
        vocab = self.model.config.image_vocab
        return grid_from_proto(msg, self.grid_size, vocab).view(-1).tolist()

    def _options(self, request: object, greedy_default: bool) -> dict:
        """temperature / top_k of a request, checked; unset temperature: greedy or 1."""
        options: dict = {}
        if request.HasField("temperature"):
            check_range("temperature", request.temperature, MIN_WIRE_TEMPERATURE, MAX_TEMPERATURE)
            options["temperature"] = float(request.temperature)
        if request.HasField("top_k"):
            check_range("top_k", request.top_k, 0, self.model.config.image_vocab)
            options["top_k"] = int(request.top_k)
        if greedy_default and "temperature" not in options:
            options["top_k"] = 1  # only the most likely code survives: greedy
        return options

    def _scale(self, request: object, name: str, default: float) -> float:
        if not request.HasField(name):
            return default
        value = getattr(request, name)
        check_range(name, value, 0.0, MAX_GUIDANCE)
        return float(value)

    def _seeds(self, request: object, n: int) -> tuple[list[int], int]:
        check_count("n", n, 1, MAX_MIXED_IMAGES_PER_CALL)
        seed = resolve_seed(request.seed if request.HasField("seed") else None)
        return [seed + i for i in range(n)], seed

    def _t2i(self, request: mixed_pb2.GenerateGridsRequest) -> tuple[dict, int]:
        self._require()
        check_prompt("prompt", request.prompt, MAX_PROMPT_CHARS)
        seeds, seed = self._seeds(request, request.n or 1)
        s = self._scale(request, "guidance_scale", self.model.config.t2i_scale)
        b, text = self.builder, self.codec.encode(request.prompt)
        rows = [b.prompt(b.t2i(text, self.blank)), b.prompt(b.t2i([], self.blank))]
        prompts, weights = guided_rows(rows, text_weights(s))
        job = dict(prompts=[prompts] * len(seeds), weights=[weights] * len(seeds), seeds=seeds)
        return {**job, **self._options(request, greedy_default=False)}, seed

    def _edit(self, request: mixed_pb2.EditGridsRequest) -> tuple[dict, int]:
        self._require()
        check_prompt("instruction", request.instruction, MAX_PROMPT_CHARS)
        source = self._grid(request.source)
        n_cells = len(source)
        if request.editable and len(request.editable) != n_cells:
            raise InvalidArgument(
                f"editable has {len(request.editable)} flags; the grid has {n_cells} cells"
            )
        seeds, seed = self._seeds(request, request.n or 1)
        cfg = self.model.config
        s_txt = self._scale(request, "guidance_scale", cfg.text_guidance)
        s_img = self._scale(request, "image_guidance_scale", cfg.image_guidance)
        b, text = self.builder, self.codec.encode(request.instruction)
        rows = [b.prompt(b.edit(text, source, self.blank)),
                b.prompt(b.edit([], source, self.blank)),
                b.prompt(b.edit([], None, self.blank))]  # fmt: skip
        prompts, weights = guided_rows(rows, edit_weights(s_img, s_txt))
        forced = None
        if request.editable:
            keep = ~torch.tensor(list(request.editable), dtype=torch.bool)
            row = torch.where(keep, torch.tensor(source), torch.full((n_cells,), -1))
            forced = row.view(1, -1).repeat(len(seeds), 1)
        sources = torch.tensor(source).view(1, -1).repeat(len(seeds), 1)  # what <keep> writes
        job = dict(prompts=[prompts] * len(seeds), weights=[weights] * len(seeds), seeds=seeds)
        job |= {"forced": forced, "sources": sources}
        return {**job, **self._options(request, greedy_default=True)}, seed

    # ---------------------------------------------------------------- sampling
    async def _sample(
        self, job: dict, on_progress: Callable | None = None, every: int = 16
    ) -> torch.Tensor:
        future = self.engine.submit(**job, on_progress=on_progress, progress_every=every)
        return await asyncio.wrap_future(future)

    async def _stream(self, job: dict, seed: int, every: int, response: type) -> AsyncIterator:
        if every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        total = self.grid_size**2
        every = every or max(1, total // 8)
        sampling = self.stream(
            lambda on_progress: self._sample(job, on_progress, every),
            lambda done, grids: (done, grids) if done < total else None,
        )
        async with aclosing(sampling) as events:
            async for final, item in events:
                done, grids = (total, item) if final else item
                yield response(
                    progress=common_pb2.Progress(step=done, total_steps=total, stage=STAGE),
                    grids=[grid_to_proto(g) for g in grids],
                    done=final,
                    seed=seed,
                )

    async def GenerateGrids(
        self, request: mixed_pb2.GenerateGridsRequest
    ) -> mixed_pb2.GenerateGridsResponse:
        job, seed = self._t2i(request)
        grids = await self._sample(job)
        return mixed_pb2.GenerateGridsResponse(grids=[grid_to_proto(g) for g in grids], seed=seed)

    async def GenerateGridsStream(
        self, stream_request: mixed_pb2.GenerateGridsStreamRequest
    ) -> AsyncIterator[mixed_pb2.GenerateGridsStreamResponse]:
        """Partial grids every ``stream_every`` cells (-1 not sampled yet); closing the
        stream cancels the sampling at the engine's next step."""
        job, seed = self._t2i(stream_request.request)
        response = mixed_pb2.GenerateGridsStreamResponse
        async for event in self._stream(job, seed, stream_request.stream_every, response):
            yield event

    async def EditGrids(self, request: mixed_pb2.EditGridsRequest) -> mixed_pb2.EditGridsResponse:
        job, seed = self._edit(request)
        grids = await self._sample(job)
        return mixed_pb2.EditGridsResponse(grids=[grid_to_proto(g) for g in grids], seed=seed)

    async def EditGridsStream(
        self, stream_request: mixed_pb2.EditGridsStreamRequest
    ) -> AsyncIterator[mixed_pb2.EditGridsStreamResponse]:
        job, seed = self._edit(stream_request.request)
        response = mixed_pb2.EditGridsStreamResponse
        async for event in self._stream(job, seed, stream_request.stream_every, response):
            yield event

    async def CaptionGrids(
        self, request: mixed_pb2.CaptionGridsRequest
    ) -> mixed_pb2.CaptionGridsResponse:
        """``n`` captions, best (highest score) first; greedy unless a temperature is set."""
        self._require()
        codes = self._grid(request.grid)
        n = request.n or 1
        check_count("n", n, 1, MAX_CAPTIONS)
        temperature = float(request.temperature) if request.HasField("temperature") else 0.0
        check_range("temperature", temperature, 0.0, MAX_TEMPERATURE)
        if 0 < temperature < MIN_WIRE_TEMPERATURE:
            raise InvalidArgument(
                f"temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:g}, got {temperature}"
            )
        if n > 1 and temperature == 0:
            raise InvalidArgument("n > 1 captions need temperature > 0 (greedy gives one)")
        seed = resolve_seed(request.seed if request.HasField("seed") else None)
        prompt = self.builder.prompt(self.builder.i2t(codes, []))
        ids, scores = await asyncio.to_thread(self._captions, [prompt] * n, temperature, seed)
        captions = sorted(
            ((self.codec.decode(t), float(s)) for t, s in zip(ids, scores.tolist(), strict=True)),
            key=lambda c: -c[1],
        )
        return mixed_pb2.CaptionGridsResponse(
            captions=[mixed_pb2.ScoredCaption(text=t, score=s) for t, s in captions], seed=seed
        )

    def _captions(self, prompts: list[Sequence], temperature: float, seed: int) -> tuple:
        generator = make_generator(seed, self.device) if temperature > 0 else None
        with torch.inference_mode():
            return generate_text(self.model, prompts, temperature=temperature, generator=generator)
