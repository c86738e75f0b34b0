"""Decoder deployment: CLIP image embeddings (+ text) → latent grids, step-batched and streamed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.checkpoint import component_format
from tessera.common.engine_service import EngineService
from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_PROMPT_CHARS, MAX_SAMPLES_PER_CALL
from tessera.common.protos import (
    check_count,
    check_prompt,
    embedding_from_proto,
    tensor_to_proto,
    text_states_from_proto,
)
from tessera.common.serving import diffusion_options, load_model
from tessera.decoder.engine import DenoiseBatcher
from tessera.decoder.kandinsky import KandinskyDenoiseBatcher, no_text
from tessera.v1 import common_pb2, decoder_pb2

SCHEDULERS = ("ddim", "ddpm", "dpmsolver++")
DEFAULT_MAX_ROWS = 32  # UNet rows per call: 16 guided images denoising at once


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class Decoder(EngineService):
    """Requests share one step-level batcher (``tessera.decoder.engine``): each UNet call
    covers every running request, whatever step each has reached. ``max_rows``: UNet rows per
    call (a guided image takes two)."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        engine: type[DenoiseBatcher] = DenoiseBatcher
        if component_format(Path(bundle_dir), "decoder") != "tessera":
            # a library's decoder (tessera.decoder.kandinsky): no text, its own schedulers
            self.model, self.device = load_model(bundle_dir, "decoder", device)
            self.text_encoder = None
            engine = KandinskyDenoiseBatcher
        else:
            self.model = self.load(bundle_dir, "decoder", device)
        self.start_engine(engine, self.model, DEFAULT_MAX_ROWS, 2 * MAX_SAMPLES_PER_CALL)

    def _parse(self, request: decoder_pb2.SampleLatentsRequest) -> dict:
        check_count("image_embeddings", len(request.image_embeddings), 1, MAX_SAMPLES_PER_CALL)
        check_prompt("prompt", request.prompt, MAX_PROMPT_CHARS, optional=True)
        dim = self.model.config.clip_dim
        emb = torch.stack([embedding_from_proto(e, dim) for e in request.image_embeddings])
        scheduler = request.scheduler or getattr(self.model.config, "scheduler", "ddim")
        if scheduler not in SCHEDULERS:
            raise InvalidArgument(f"scheduler must be one of {', '.join(SCHEDULERS)}")
        # guidance_scale's bounds are the sampler's own (validate_request, on submit)
        guidance, steps, seed = diffusion_options(request)
        text = None
        if request.HasField("text_states"):  # encoded upstream (Prior.SamplePrior)
            text = text_states_from_proto(request.text_states)
        return {
            "emb": emb,
            "prompt": request.prompt,
            "text": text,
            "seeds": [seed + i for i in range(len(emb))],
            "guidance": guidance,
            "steps": steps,
            "scheduler": scheduler,
            "seed": seed,
        }

    async def SampleLatents(
        self, request: decoder_pb2.SampleLatentsRequest
    ) -> decoder_pb2.SampleLatentsResponse:
        job = self._parse(request)
        latents = await self._sample(job)
        return decoder_pb2.SampleLatentsResponse(
            latents=[tensor_to_proto(z) for z in latents], seed=job["seed"]
        )

    async def _sample(
        self,
        job: dict,
        on_progress: Callable[[int, int, torch.Tensor], bool] | None = None,
        every: int = 5,
    ) -> torch.Tensor:
        text = job["text"]
        if text is None and self.text_encoder is None:
            text = no_text()
        elif text is None:
            text = await asyncio.to_thread(self.text_encoder.encode, [job["prompt"]])
        metrics.observe_batch("Decoder", self.engine.running_rows + len(job["seeds"]))
        future = self.engine.submit(
            job["emb"],
            text,
            seeds=job["seeds"],
            steps=job["steps"],
            guidance_scale=job["guidance"],
            scheduler=job["scheduler"],
            on_progress=on_progress,
            progress_every=every,
        )
        latents = await asyncio.wrap_future(future)
        metrics.add_denoise_steps(job["steps"] or self.model.config.default_steps)
        return latents.cpu()

    async def SampleLatentsStream(
        self, stream_request: decoder_pb2.SampleLatentsStreamRequest
    ) -> AsyncIterator[decoder_pb2.SampleLatentsStreamResponse]:
        """x0 previews every ``stream_every`` steps, then the final latents; closing the
        stream cancels the sampling at the engine's next step."""
        job = self._parse(stream_request.request)
        if stream_request.stream_every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        steps = job["steps"] or self.model.config.default_steps
        every = stream_request.stream_every or max(1, steps // 5)  # ~5 previews by default
        totals = {"steps": 0}

        def preview(step: int, total: int, x0: torch.Tensor) -> tuple | None:
            totals["steps"] = total
            return (step, total, x0.cpu()) if step < total else None

        sampling = self.stream(lambda on_progress: self._sample(job, on_progress, every), preview)
        async with aclosing(sampling) as events:
            async for final, item in events:
                if final:
                    total = totals["steps"] or steps
                    step, latents = total, item
                else:
                    step, total, latents = item
                yield decoder_pb2.SampleLatentsStreamResponse(
                    progress=common_pb2.Progress(step=step, total_steps=total, stage="decoder"),
                    latents=[tensor_to_proto(z) for z in latents],
                    done=final,
                    seed=job["seed"],
                )
