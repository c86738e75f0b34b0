"""The text-to-image routes, composed from model-service handles.

``ar``:     LanguageModel.SampleTokens → Detokenizer.Detokenize(grids)
            [with ``candidates``: the LM also answers the prompt's MiniLM states, and the
            Detokenizer keeps the candidate of each image that its CLIP scores best]
``unclip``: Prior.SamplePrior → Decoder.SampleLatents → Detokenizer.Detokenize(latents)
``pixel``:  PixelModel.SamplePixels (``routes/pixel.py``)
``variations``: Prior.EmbedImage → Decoder.SampleLatents → Detokenizer.Detokenize(latents)

Handles carry the protobuf messages of `protos/tessera/v1`. Pixels come back from the
Detokenizer raw (``Detokenize(return_pixels)`` → ``Pixels``) and are PNG-encoded once, here,
for the images a route returns (upscaled in the same pass). The same code runs
against Ray Serve deployment handles (the Gateway and JobWorker deployments) and against in-process
services (:func:`local_pipelines`, used by benchmarks and evaluation), so "served vs
in-process" compares transport, not two implementations.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from tessera.common.errors import Cancelled, InvalidArgument, NotFound
from tessera.common.images import pixels_to_image
from tessera.common.limits import MAX_ITEMS_PER_CALL, MAX_LM_IMAGES_PER_CALL
from tessera.common.serving import call
from tessera.routes.bundle import BundleInfo
from tessera.routes.handles import ModelHandles
from tessera.routes.mixed import MixedRoutes
from tessera.routes.pixel import sample_pixels
from tessera.routes.schemas import (
    EventCallback,
    GenerationParams,
    StreamEvent,
    VariationParams,
    passed_options,
)
from tessera.v1 import common_pb2, decoder_pb2, generation_pb2, lm_pb2, prior_pb2, tokenizer_pb2

# ar: candidates sampled per returned image when the bundle has a CLIP to rerank them (the
# Serve config's `args.ar_candidates` overrides it).
DEFAULT_AR_CANDIDATES = 4

# The LM's sampling options that a generation request passes through as they are: the
# optional fields the two contracts share (the seed is set per call).
LM_SAMPLING_FIELDS = passed_options(lm_pb2.SampleTokensRequest)


class Pipelines(MixedRoutes):
    """Route composition over model handles (edits and captions: ``routes/mixed.py``)."""

    def __init__(
        self, handles: ModelHandles, info: BundleInfo, ar_candidates: int | None = None
    ) -> None:
        self.handles = handles
        self.info = info
        default = DEFAULT_AR_CANDIDATES if ar_candidates is None else ar_candidates
        self.ar_candidates = default if info.ar_rerank else 1

    # -- request checks shared by every entry point -------------------------------------
    def scale_for(self, size: str | None, route: str = "ar") -> int:
        """Integer upscale factor for a requested "WxH" (the route's native size → 1)."""
        if not size:
            return 1
        side = int(size.split("x")[0])
        native = self.info.native_size(route)
        if side % native:
            allowed = ", ".join(
                f"{native * k}x{native * k}" for k in (1, 2, 4, 8) if native * k <= 1024
            )
            raise InvalidArgument(f"size {size} is not served; use one of {allowed}")
        return side // native

    def check_model(self, model: str | None) -> None:
        if model and model != self.info.name:
            raise NotFound(f"unknown model {model!r}; served: {self.info.name!r}")

    def check_route(self, route: str) -> None:
        if route not in self.info.routes:
            raise NotFound(f"route {route!r} is not available for model {self.info.name!r}")

    def check_steps(self, steps: int | None) -> None:
        """Diffusion steps the bundle's decoder can run (the public bound is MAX_STEPS; a
        decoder trained on fewer timesteps allows fewer): the decoder's own message."""
        high = self.info.max_steps
        if steps is not None and high is not None and not 1 <= steps <= high:
            raise InvalidArgument(f"steps must be in [1, {high}], got {steps}")

    def check_params(self, params: GenerationParams) -> None:
        """Everything about a generation request that the bundle decides: model, route,
        size and (unclip) steps. The synchronous routes and the job queue both run it."""
        self.check_model(params.model)
        self.check_route(params.route)
        self.scale_for(params.size, params.route)
        if params.route == "unclip":
            self.check_steps(params.steps)
        elif params.route == "mixed":
            self.check_mixed_params(params)

    # -- routes ------------------------------------------------------------------------
    async def generate(
        self, params: GenerationParams, on_event: EventCallback | None = None
    ) -> generation_pb2.GenerateResponse:
        """Run one route end to end; ``on_event`` gets progress (+ previews) and may cancel."""
        self.check_params(params)
        scale = self.scale_for(params.size, params.route)
        start = time.perf_counter()
        if params.route == "ar":
            images, seed = await self._ar(params, on_event)
        elif params.route == "pixel":
            images, seed = await sample_pixels(self.handles, params, on_event)
        elif params.route == "mixed":
            images, seed = await self._mixed(params, on_event)
        else:
            images, seed = await self._unclip(params, on_event)
        return generation_pb2.GenerateResponse(
            images=[pixels_to_image(p, scale) for p in images],
            seed=seed,
            route=params.route,
            model=self.info.name,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    def candidates_for(self, params: GenerationParams) -> int:
        """How many ar candidates to sample per returned image."""
        if params.candidates is None:
            return self.ar_candidates
        if params.candidates > 1 and not self.info.ar_rerank:
            raise InvalidArgument(
                f"candidates > 1 needs a CLIP component to rerank (and an LM of Tessera's own); "
                f"{self.info.name!r} has none"
            )
        return params.candidates

    async def _ar(
        self, params: GenerationParams, on_event: EventCallback | None
    ) -> tuple[list, int]:
        k = self.candidates_for(params)
        if k == 1:
            res = await self._sample_grids(self._lm_request(params, params.seed), on_event)
            return await self._decode(grids=list(res.grids)), res.seed
        base = params.seed if params.seed is not None else random.randrange(2**31)
        # Candidate-major seeds, as many per LM call as it takes: the candidates of one
        # request cost one call (not k), and share its prefill and every decode step.
        # Wrapped to int64 (the wire's type): a seed near MAX_SEED would overflow it; the
        # generators take seeds modulo 2**64, so a wrapped seed draws the same numbers.
        seeds = [int64(candidate_seed(base, j) + i) for j in range(k) for i in range(params.n)]
        samplers = [  # previews (if streaming) show candidate 0, the first n of the first call
            asyncio.ensure_future(
                self._sample_grids(
                    # the first call also answers the prompt's MiniLM states, for reranking
                    self._lm_request(params, None, chunk, return_states=c == 0),
                    on_event if c == 0 else None,
                    shown=params.n,
                )
            )
            for c, chunk in enumerate(_chunks(seeds, MAX_LM_IMAGES_PER_CALL))
        ]
        try:
            replies = await asyncio.gather(*samplers)
        finally:  # a cancelled or failed request stops every candidate (no-ops once done)
            for task in samplers:
                task.cancel()
        grids = [g for reply in replies for g in reply.grids]  # candidate-major: j * n + i
        # The Detokenizer decodes, scores with CLIP and keeps the best of each group of k
        # consecutive grids: the candidates never leave it (one hop, not two).
        groups = [grids[j * params.n + i] for i in range(params.n) for j in range(k)]
        rerank = tokenizer_pb2.Rerank(text_states=replies[0].text_states, candidates=k)
        return await self._decode(grids=groups, rerank=rerank), base

    def _lm_request(
        self,
        params: GenerationParams,
        seed: int | None,
        seeds: list[int] | None = None,
        return_states: bool = False,
    ) -> lm_pb2.SampleTokensRequest:
        """The LM call for ``params``: n images from ``seed`` on, or one image per ``seeds``."""
        if seeds:
            req = lm_pb2.SampleTokensRequest(prompt=params.prompt, seeds=seeds)
        else:
            req = lm_pb2.SampleTokensRequest(prompt=params.prompt, n=params.n)
        req.return_states = return_states
        if seed is not None:
            req.seed = seed
        return params.set_options(req, LM_SAMPLING_FIELDS)

    async def _sample_grids(
        self,
        req: lm_pb2.SampleTokensRequest,
        on_event: EventCallback | None,
        shown: int | None = None,
    ) -> lm_pb2.SampleTokensResponse:
        """The LM's answer to one request; with ``on_event``, streamed with previews of the
        first ``shown`` grids (all by default)."""
        if on_event is None:
            return await call(self.handles.lm.SampleTokens, req)
        sreq = lm_pb2.SampleTokensStreamRequest(request=req)
        stream = self.handles.lm.options(stream=True).SampleTokensStream.remote(sreq)
        async for ev in stream:
            if ev.done:
                return lm_pb2.SampleTokensResponse(
                    grids=ev.grids, seed=ev.seed, text_states=ev.text_states
                )
            shown_grids = [_fill_unsampled(g) for g in list(ev.grids)[:shown]]
            previews = [pixels_to_image(p) for p in await self._decode(grids=shown_grids)]
            if not await on_event(StreamEvent(progress=ev.progress, previews=previews)):
                _close(stream)
                raise Cancelled("generation cancelled")
        raise RuntimeError("the LM's stream ended without its final event")

    async def _unclip(
        self, params: GenerationParams, on_event: EventCallback | None
    ) -> tuple[list, int]:
        preq = prior_pb2.SamplePriorRequest(prompt=params.prompt, n=params.n, return_states=True)
        if params.seed is not None:
            preq.seed = params.seed
        prior = await call(self.handles.prior.SamplePrior, preq)
        if on_event is not None:
            progress = common_pb2.Progress(step=1, total_steps=1, stage="prior")
            if not await on_event(StreamEvent(progress=progress)):
                raise Cancelled("generation cancelled")
        return await self._decode_embeddings(
            list(prior.embeddings),
            params.prompt,
            prior.seed,
            params,
            on_event,
            prior.text_states if prior.HasField("text_states") else None,
        )

    async def variations(
        self, image: bytes, params: VariationParams, on_event: EventCallback | None = None
    ) -> generation_pb2.GenerateResponse:
        """Image → CLIP image embedding → decoder → de-tokenizer, ``params.n`` times."""
        self.check_model(params.model)
        self.check_route("unclip")
        self.check_steps(params.steps)
        scale = self.scale_for(params.size)
        start = time.perf_counter()
        emb = await call(self.handles.prior.EmbedImage, prior_pb2.EmbedImageRequest(images=[image]))
        seed = params.seed if params.seed is not None else int(time.time_ns() % 2**31)
        images, seed = await self._decode_embeddings(
            [emb.embeddings[0]] * params.n, "", seed, params, on_event
        )
        return generation_pb2.GenerateResponse(
            images=[pixels_to_image(p, scale) for p in images],
            seed=seed,
            route="unclip",
            model=self.info.name,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    async def _decode_embeddings(
        self,
        embeddings: list,
        prompt: str,
        seed: int,
        params: GenerationParams | VariationParams,
        on_event: EventCallback | None,
        states: common_pb2.Tensor | None = None,
    ) -> tuple[list, int]:
        """The decoder's latents for ``embeddings``, decoded; ``states``: the prompt's MiniLM
        states when the prior already encoded it."""
        dreq = decoder_pb2.SampleLatentsRequest(
            image_embeddings=embeddings, prompt=prompt, seed=seed
        )
        if states is not None:
            dreq.text_states.CopyFrom(states)
        if params.guidance_scale is not None:
            dreq.guidance_scale = params.guidance_scale
        if params.steps is not None:
            dreq.steps = params.steps
        if on_event is None:
            res = await call(self.handles.decoder.SampleLatents, dreq)
            latents = list(res.latents)
        else:
            latents = []
            sreq = decoder_pb2.SampleLatentsStreamRequest(request=dreq)
            stream = self.handles.decoder.options(stream=True).SampleLatentsStream.remote(sreq)
            async for ev in stream:
                latents = list(ev.latents)
                if ev.done:
                    break
                previews = [pixels_to_image(p) for p in await self._decode(latents=latents)]
                if not await on_event(StreamEvent(progress=ev.progress, previews=previews)):
                    _close(stream)
                    raise Cancelled("generation cancelled")
        return await self._decode(latents=latents), seed

    async def _decode(
        self,
        grids: list | None = None,
        latents: list | None = None,
        rerank: tokenizer_pb2.Rerank | None = None,
    ) -> list:
        """Raw ``Pixels`` for grids or latents, in order (PNG-encoded only when returned);
        with ``rerank``, one per group of ``rerank.candidates`` (a call holds whole groups)."""
        items = grids or latents or []
        key = "grids" if grids else "latents"
        size = MAX_ITEMS_PER_CALL
        if rerank is not None:
            size -= size % rerank.candidates
        replies = await asyncio.gather(
            *(
                call(
                    self.handles.detokenizer.Detokenize,
                    tokenizer_pb2.DetokenizeRequest(
                        **{key: chunk},
                        quantize=self.info.quantize_latents,
                        return_pixels=True,
                        rerank=rerank,
                    ),
                )
                for chunk in _chunks(items, size)
            )
        )
        return [pixels for res in replies for pixels in res.pixels]

    async def stream(self, params: GenerationParams) -> AsyncIterator[StreamEvent]:
        """Progress events with previews, then one event carrying the result."""
        queue: asyncio.Queue = asyncio.Queue()

        async def on_event(event: StreamEvent) -> bool:
            await queue.put(event)
            return True

        task = asyncio.create_task(self.generate(params, on_event))
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


def candidate_seed(seed: int, j: int) -> int:
    """The LM seed of reranking candidate ``j`` (image i then uses it + i, as ever).

    Candidate 0 is the request's own seed, so ``candidates=1`` is plain sampling. The others
    are hashed from (seed, j) rather than offset: with offsets, requests at seeds s and s+1
    would share most of their candidates and CLIP would pick the same image for both."""
    if j == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}:{j}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 2  # 62 bits: seed + i stays a valid int64


def int64(value: int) -> int:
    """``value`` wrapped into a signed 64-bit integer (two's complement)."""
    return (value + 2**63) % 2**64 - 2**63


def _chunks(items: list, size: int = MAX_ITEMS_PER_CALL) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fill_unsampled(grid: common_pb2.TokenGrid) -> common_pb2.TokenGrid:
    """Previews decode partial grids: positions not sampled yet (-1) become token 0."""
    return common_pb2.TokenGrid(
        tokens=[t if t >= 0 else 0 for t in grid.tokens], height=grid.height, width=grid.width
    )


def _close(stream: Any) -> None:
    cancel = getattr(stream, "cancel", None)
    if cancel:
        cancel()
