"""Prior deployment: hosts CLIP (text and image towers) and the diffusion prior."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.checkpoint import component_format
from tessera.common.engine_service import EngineService
from tessera.common.errors import InvalidArgument
from tessera.common.images import arrays_to_tensor, decode_image, pixels_from_proto
from tessera.common.limits import (
    MAX_ITEMS_PER_CALL,
    MAX_PROMPT_CHARS,
    MAX_SAMPLES_PER_CALL,
    MAX_TEXTS_PER_CALL,
)
from tessera.common.protos import (
    check_count,
    check_prompt,
    embedding_to_proto,
    text_states_to_proto,
)
from tessera.common.serving import (
    batched,
    diffusion_options,
    item_slices,
    load_model,
    split_results,
)
from tessera.common.text_encoder import TextBatch
from tessera.prior.engine import PriorBatcher
from tessera.prior.kandinsky import KandinskyPriorBatcher
from tessera.v1 import prior_pb2

DEFAULT_MAX_ROWS = 64  # prior rows per step call: 16 guided prompts with 2 candidates


def count_cost(item: tuple) -> int:
    """An EmbedText / EmbedImage request's batch cost: its texts or images."""
    return len(item[0])


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class Prior(EngineService):
    """SamplePrior requests share one step-level batcher (``tessera.prior.engine``): each
    step call covers every running request, whatever step each has reached. ``max_rows``:
    prior rows per step call (k candidates per image, two rows each when guided).

    EmbedText and EmbedImage batch concurrent requests with ``@serve.batch`` (MiniLM and the
    CLIP towers at batch 1 are bound by reading their weights): budgets and wait as in
    ``BatchKnobs``."""

    _batched_methods = {
        "_text_batch": "max_texts_per_batch",
        "_image_batch": "max_images_per_batch",
    }

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.imported = component_format(Path(bundle_dir), "prior") != "tessera"
        if self.imported:  # a library's prior (tessera.prior.kandinsky): no MiniLM
            self.clip, self.device = load_model(bundle_dir, "clip", device)
            self.prior, _ = load_model(bundle_dir, "prior", device)
            self.text_encoder = None
            self.image_size = self.clip.image_size
            self.init_batching(_text_batch=MAX_TEXTS_PER_CALL, _image_batch=MAX_ITEMS_PER_CALL)
            engine = partial(KandinskyPriorBatcher, clip=self.clip)
            self.start_engine(engine, self.prior, DEFAULT_MAX_ROWS, MAX_SAMPLES_PER_CALL * 2)
            return
        self.clip = self.load(bundle_dir, "clip", device)
        self.prior = self.load(bundle_dir, "prior", device)
        self.image_size = self.clip.config.image_size
        self.init_batching(_text_batch=MAX_TEXTS_PER_CALL, _image_batch=MAX_ITEMS_PER_CALL)
        # The most rows one request can take: every sample guided (2 rows per candidate).
        max_request_rows = MAX_SAMPLES_PER_CALL * self.prior.config.n_candidates * 2
        self.start_engine(PriorBatcher, self.prior, DEFAULT_MAX_ROWS, max_request_rows)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(B, D) CLIP text embeddings (in-process callers use this too)."""
        return self._embed_texts(texts)[0]

    def _embed_texts(self, texts: list[str]) -> tuple[torch.Tensor, TextBatch | None]:
        """CLIP text embeddings and the MiniLM encoding they came from (None: imported)."""
        if self.imported:
            return self.clip.embed_text(texts), None
        text = self.text_encoder.encode(texts)
        with torch.inference_mode():
            return self.clip.embed_text(text.pooled.to(self.device)), text

    async def EmbedText(self, request: prior_pb2.EmbedTextRequest) -> prior_pb2.EmbedTextResponse:
        check_count("texts", len(request.texts), 1, MAX_TEXTS_PER_CALL)
        for t in request.texts:
            check_prompt("each text", t, MAX_PROMPT_CHARS)
        return split_results(await self._text_batch((list(request.texts), request.return_states)))

    @batched(max_batch_size=MAX_TEXTS_PER_CALL, cost=count_cost)
    async def _text_batch(self, items: list[tuple[list[str], bool]]) -> list:
        return await asyncio.to_thread(self._embed_text_many, items)

    def _embed_text_many(self, items: list[tuple[list[str], bool]]) -> list:
        emb, text = self._embed_texts([t for texts, _ in items for t in texts])
        return [
            prior_pb2.EmbedTextResponse(
                embeddings=[embedding_to_proto(e) for e in emb[rows]],
                text_states=[text_states_to_proto(text, i) for i in range(rows.start, rows.stop)]
                if return_states and text is not None
                else [],
            )
            for (_, return_states), rows in zip(
                items, item_slices(len(texts) for texts, _ in items), strict=True
            )
        ]

    async def EmbedImage(
        self, request: prior_pb2.EmbedImageRequest
    ) -> prior_pb2.EmbedImageResponse:
        check_count("images", len(request.images) + len(request.pixels), 1, MAX_ITEMS_PER_CALL)
        if request.images and request.pixels:
            raise InvalidArgument("set either images or pixels, not both")
        arrays = [decode_image(b, self.image_size, resize=True) for b in request.images]
        arrays += [pixels_from_proto(p, self.image_size) for p in request.pixels]
        return split_results(await self._image_batch((arrays,)))

    @batched(max_batch_size=4 * MAX_ITEMS_PER_CALL, cost=count_cost)
    async def _image_batch(self, items: list[tuple[list]]) -> list:
        return await asyncio.to_thread(self._embed_image_many, items)

    @torch.inference_mode()
    def _embed_image_many(self, items: list[tuple[list]]) -> list:
        arrays = [a for (item_arrays,) in items for a in item_arrays]
        if self.imported:
            emb = self.clip.embed_images(arrays).cpu()
        else:
            emb = self.clip.embed_image(arrays_to_tensor(arrays).to(self.device)).cpu()
        return [
            prior_pb2.EmbedImageResponse(embeddings=[embedding_to_proto(e) for e in emb[rows]])
            for rows in item_slices(len(item_arrays) for (item_arrays,) in items)
        ]

    async def SamplePrior(
        self, request: prior_pb2.SamplePriorRequest
    ) -> prior_pb2.SamplePriorResponse:
        check_prompt("prompt", request.prompt, MAX_PROMPT_CHARS)
        n = request.n or 1
        check_count("n", n, 1, MAX_SAMPLES_PER_CALL)
        # guidance_scale's bounds are the sampler's own (prior.sampling.check_sample_args)
        guidance, steps, seed = diffusion_options(request)
        if self.imported:
            return await self._sample_imported(request.prompt, n, seed, guidance, steps)
        text_emb, text = await asyncio.to_thread(self._embed_texts, [request.prompt] * n)
        metrics.observe_batch("Prior", self.engine.running_rows + n)
        future = self.engine.submit(
            text, text_emb, seeds=[seed + i for i in range(n)], guidance_scale=guidance, steps=steps
        )
        emb = await asyncio.wrap_future(future)  # cancelling this await cancels the sampling
        metrics.add_denoise_steps(steps or self.prior.config.sample_steps, component="prior")
        response = prior_pb2.SamplePriorResponse(
            embeddings=[embedding_to_proto(e) for e in emb.cpu()], seed=seed
        )
        if request.return_states:
            response.text_states.CopyFrom(text_states_to_proto(text))
        return response

    async def _sample_imported(
        self, prompt: str, n: int, seed: int, guidance: float | None, steps: int | None
    ) -> prior_pb2.SamplePriorResponse:
        """SamplePrior for an imported prior: its own CLIP encodes the prompt once."""
        cond = await asyncio.to_thread(self.clip.condition, [prompt])
        metrics.observe_batch("Prior", self.engine.running_rows + n)
        future = self.engine.submit(
            cond.expand(n), seeds=[seed + i for i in range(n)], guidance_scale=guidance, steps=steps
        )
        emb = await asyncio.wrap_future(future)  # cancelling this await cancels the sampling
        metrics.add_denoise_steps(steps or self.prior.config.sample_steps, component="prior")
        return prior_pb2.SamplePriorResponse(
            embeddings=[embedding_to_proto(e) for e in emb.cpu()], seed=seed
        )
