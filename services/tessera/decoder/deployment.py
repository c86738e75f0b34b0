"""Decoder deployment: CLIP image embeddings (+ text) → latent grids, batched and streamed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.errors import InvalidArgument
from tessera.common.protos import check_count, check_range, embedding_from_proto, tensor_to_proto
from tessera.common.serving import (
    BatchKnobs,
    batched,
    load_model,
    resolve_seed,
    split_results,
    stream_from_thread,
)
from tessera.common.text_encoder import shared_text_encoder
from tessera.decoder.pipeline import sample_latents
from tessera.v1 import common_pb2, decoder_pb2

MAX_SAMPLES = 8
MAX_PROMPT_CHARS = 500
MAX_STEPS = 1000
SCHEDULERS = ("ddim", "ddpm")


@serve.deployment(ray_actor_options={"num_cpus": 0.3}, max_ongoing_requests=32)
class Decoder(BatchKnobs):
    _batched_methods = ("_decode_batch",)

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model, self.device = load_model(bundle_dir, "decoder", device)
        self.text_encoder = shared_text_encoder(str(self.device))
        self.model_loaded = True

    def _parse(self, request: decoder_pb2.SampleLatentsRequest) -> dict:
        check_count("image_embeddings", len(request.image_embeddings), 1, MAX_SAMPLES)
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument(f"prompt must be at most {MAX_PROMPT_CHARS} characters")
        dim = self.model.config.clip_dim
        emb = torch.stack([embedding_from_proto(e, dim) for e in request.image_embeddings])
        scheduler = request.scheduler or "ddim"
        if scheduler not in SCHEDULERS:
            raise InvalidArgument(f"scheduler must be one of {', '.join(SCHEDULERS)}")
        guidance = steps = None
        if request.HasField("guidance_scale"):
            check_range("guidance_scale", request.guidance_scale, 0.0, 20.0)
            guidance = request.guidance_scale
        if request.HasField("steps"):
            check_count("steps", request.steps, 1, MAX_STEPS)
            steps = request.steps
        if request.stream_every < 0:
            raise InvalidArgument("stream_every must be >= 0")
        seed = resolve_seed(request.seed if request.HasField("seed") else None)
        return {
            "emb": emb,
            "prompt": request.prompt,
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
        latents = split_results(await self._decode_batch(job))
        return decoder_pb2.SampleLatentsResponse(
            latents=[tensor_to_proto(z) for z in latents], seed=job["seed"]
        )

    @batched(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _decode_batch(self, jobs: list[dict]) -> list:
        return await asyncio.to_thread(self._decode_many, jobs)

    def _decode_many(self, jobs: list[dict]) -> list:
        # Requests with the same steps/scheduler/guidance share one model call per step.
        out: list = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job["steps"], job["scheduler"], job["guidance"]), []).append(i)
        for (steps, scheduler, guidance), idx in groups.items():
            merged = {
                "emb": torch.cat([jobs[i]["emb"] for i in idx]),
                "seeds": [s for i in idx for s in jobs[i]["seeds"]],
                "steps": steps,
                "scheduler": scheduler,
                "guidance": guidance,
            }
            prompts = [p for i in idx for p in [jobs[i]["prompt"]] * len(jobs[i]["seeds"])]
            metrics.observe_batch("Decoder", len(merged["seeds"]))
            latents = self._sample_prompts(merged, prompts)
            start = 0
            for i in idx:
                k = len(jobs[i]["seeds"])
                out[i] = latents[start : start + k]
                start += k
        return out

    @torch.inference_mode()
    def _sample_prompts(
        self,
        job: dict,
        prompts: list[str],
        on_progress: Callable[[int, int, torch.Tensor], bool] | None = None,
        every: int = 0,
    ) -> torch.Tensor:
        text = self.text_encoder.encode(prompts).to(self.device)
        kwargs = {"progress_every": every} if every else {}
        steps_done = {"n": 0}

        def progress(step: int, total: int, x0: torch.Tensor) -> bool:
            steps_done["n"] = step
            return on_progress(step, total, x0) if on_progress else True

        latents = sample_latents(
            self.model,
            job["emb"].to(self.device),
            text,
            seeds=job["seeds"],
            steps=job["steps"],
            guidance_scale=job["guidance"],
            scheduler=job["scheduler"],
            on_progress=progress,
            **kwargs,
        )
        metrics.add_denoise_steps(steps_done["n"])
        return latents.cpu()

    async def SampleLatentsStream(
        self, request: decoder_pb2.SampleLatentsRequest
    ) -> AsyncIterator[decoder_pb2.SampleLatentsEvent]:
        """x0 previews every ``stream_every`` steps, then the final latents."""
        job = self._parse(request)
        prompts = [job["prompt"]] * len(job["seeds"])
        state = {"total": 0}

        def work(emit: Callable[[object], bool]) -> torch.Tensor:
            def on_progress(step: int, total: int, x0: torch.Tensor) -> bool:
                state["total"] = total
                return emit((step, total, x0.cpu()))

            return self._sample_prompts(job, prompts, on_progress, request.stream_every)

        async for item in stream_from_thread(work):
            if isinstance(item, tuple):
                step, total, x0 = item
                yield decoder_pb2.SampleLatentsEvent(
                    progress=common_pb2.Progress(step=step, total_steps=total, stage="decoder"),
                    latents=[tensor_to_proto(z) for z in x0],
                    seed=job["seed"],
                )
            else:
                total = state["total"]
                yield decoder_pb2.SampleLatentsEvent(
                    progress=common_pb2.Progress(step=total, total_steps=total, stage="decoder"),
                    latents=[tensor_to_proto(z) for z in item],
                    done=True,
                    seed=job["seed"],
                )
