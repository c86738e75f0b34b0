"""Kandinsky 2.2's prior pipeline served by the Prior deployment: ``KandinskyCLIP`` (the CLIP
tokenizer, text and image towers with projection), ``KandinskyPrior`` (the diffusers
``PriorTransformer`` and its ``UnCLIPScheduler`` settings) and ``KandinskyPriorBatcher``,
the step-level engine: every running request's rows share one transformer call per step,
each at its own timestep, then each request takes its own UnCLIP step.

Semantics are ``KandinskyV22PriorPipeline``'s: the prompt is tokenized to the tokenizer's
maximum length, the unconditional prompt is "", guidance applies only above 1, and the result
is the prior's de-normalised sample (``post_process_latents``), not L2-normalised: it is what
the Kandinsky decoder is conditioned on. Each prompt draws its noise from its own generator
seeded with its seed (the pipeline given one generator per image draws the same).
``EmbedText`` / ``EmbedImage`` answer with L2-normalised CLIP embeddings, as the contract says.
"""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tessera.common.device import make_generator
from tessera.common.errors import InvalidArgument
from tessera.common.hf_weights import to_serving
from tessera.common.limits import MAX_GUIDANCE
from tessera.common.step_loop import StepJob, StepLoop

MIN_PRIOR_STEPS = 2  # UnCLIPScheduler spaces its timesteps over steps - 1 intervals


def _load(meta: dict, cls_name: str, subfolder: str, library: str = "transformers") -> nn.Module:
    module = __import__(library, fromlist=[cls_name])
    path = str(Path(meta["source"]) / subfolder)
    return (
        getattr(module, cls_name)
        .from_pretrained(path, use_safetensors=True, local_files_only=True)
        .eval()
    )


@dataclass(frozen=True)
class Condition:
    """The prompt as the prior reads it: ``emb`` (B, D) projected text embedding, ``states``
    (B, T, H) last hidden states, ``mask`` (B, T) real tokens."""

    emb: Tensor
    states: Tensor
    mask: Tensor

    def expand(self, n: int) -> Condition:
        return Condition(
            self.emb.expand(n, -1), self.states.expand(n, -1, -1), self.mask.expand(n, -1)
        )


class KandinskyCLIP(nn.Module):
    family = "kandinsky22"

    def __init__(
        self, text: nn.Module, image: nn.Module, tokenizer: Any, processor: Any, meta: dict
    ) -> None:
        super().__init__()
        self.text_encoder, self.image_encoder = text, image
        self.tokenizer, self.processor, self.meta = tokenizer, processor, meta
        self.image_size = int(meta["image_size"])  # the image tower's input side

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> KandinskyCLIP:
        from transformers import AutoImageProcessor, CLIPTokenizer

        source = Path(meta["source"])
        tokenizer = CLIPTokenizer.from_pretrained(str(source / "tokenizer"))
        processor = AutoImageProcessor.from_pretrained(str(source / "image_processor"))
        text = _load(meta, "CLIPTextModelWithProjection", "text_encoder")
        image = _load(meta, "CLIPVisionModelWithProjection", "image_encoder")
        return to_serving(cls(text, image, tokenizer, processor, meta), device)

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    @torch.inference_mode()
    def condition(self, texts: list[str]) -> Condition:
        """The prompts encoded as the pipeline encodes them (padded to the maximum length)."""
        tok = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        out = self.text_encoder(tok.input_ids.to(self.device))
        mask = tok.attention_mask.bool().to(self.device)
        return Condition(out.text_embeds.float(), out.last_hidden_state, mask)

    def embed_text(self, texts: list[str]) -> Tensor:  # (B, D) L2-normalised
        return F.normalize(self.condition(texts).emb, dim=-1)

    @torch.inference_mode()
    def embed_images(self, arrays: list[np.ndarray]) -> Tensor:  # uint8 (H, W, 3) -> (B, D)
        pixels = self.processor(images=list(arrays), return_tensors="pt").pixel_values
        dtype = next(self.image_encoder.parameters()).dtype
        out = self.image_encoder(pixels.to(self.device, dtype)).image_embeds.float()
        return F.normalize(out, dim=-1)


@dataclass(frozen=True)
class KandinskyPriorConfig:
    embed_dim: int
    sample_steps: int
    guidance_scale: float
    n_candidates: int
    num_train_timesteps: int


class KandinskyPrior(nn.Module):
    family = "kandinsky22"

    def __init__(self, prior: nn.Module, scheduler_config: dict, meta: dict) -> None:
        super().__init__()
        self.prior = prior
        self.scheduler_config = scheduler_config
        fields = KandinskyPriorConfig.__dataclass_fields__
        self.config = KandinskyPriorConfig(**{k: meta[k] for k in fields})

    @classmethod
    def from_import(cls, directory: Path, meta: dict, device: torch.device | str) -> KandinskyPrior:
        prior = _load(meta, "PriorTransformer", "prior", library="diffusers")
        sched_path = Path(meta["source"]) / "scheduler" / "scheduler_config.json"
        return to_serving(cls(prior, json.loads(sched_path.read_text()), meta), device)

    def make_scheduler(self) -> object:
        from diffusers import UnCLIPScheduler

        return UnCLIPScheduler.from_config(self.scheduler_config)


@dataclass(eq=False)
class _Job(StepJob):
    cond: Condition  # n rows
    guidance: float
    scheduler: object
    generators: list[torch.Generator]
    x: Tensor  # (n, D) current sample
    future: Future
    index: int = 0


class KandinskyPriorBatcher(StepLoop):
    """``submit(cond, seeds, ...)`` from any thread; the future resolves to (n, D) image
    embeddings. ``future.cancel()`` drops the request at the next step."""

    def __init__(self, prior: KandinskyPrior, clip: KandinskyCLIP, max_rows: int = 64) -> None:
        self.prior, self.clip = prior.eval(), clip
        self.device = next(prior.parameters()).device
        self.dtype = next(prior.parameters()).dtype
        self.null = clip.condition([""])  # the pipeline's unconditional prompt
        super().__init__("prior", max_rows)

    def submit(
        self,
        cond: Condition,
        *,
        seeds: list[int],
        guidance_scale: float | None = None,
        steps: int | None = None,
    ) -> Future:
        cfg = self.prior.config
        g = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
        steps = cfg.sample_steps if steps is None else int(steps)
        if not np.isfinite(g) or not 0 <= g <= MAX_GUIDANCE:
            raise InvalidArgument(f"guidance_scale must be in [0, {MAX_GUIDANCE:g}]; got {g}")
        if not MIN_PRIOR_STEPS <= steps <= cfg.num_train_timesteps:
            raise InvalidArgument(
                f"steps must be in [{MIN_PRIOR_STEPS}, {cfg.num_train_timesteps}]; got {steps}"
            )
        if len(seeds) != cond.emb.shape[0]:
            raise InvalidArgument(f"{len(seeds)} seeds for {cond.emb.shape[0]} prompts")
        scheduler = self.prior.make_scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        generators = [make_generator(s, self.device) for s in seeds]
        x = torch.cat(
            [torch.randn(1, cfg.embed_dim, generator=gen, device=self.device) for gen in generators]
        )
        job = _Job(
            cond=cond,
            guidance=g if g > 1 else 1.0,  # diffusers: guidance only above 1
            scheduler=scheduler,
            generators=generators,
            x=x * scheduler.init_noise_sigma,
            future=Future(),
        )
        return self._enqueue(job)

    def _step(self) -> None:
        """One transformer call for every running row, then each job's UnCLIP step."""
        xs, ts, embs, states, masks = [], [], [], [], []
        for job in self.running:
            n = job.x.shape[0]
            t = job.scheduler.timesteps[job.index]
            for uncond in job.halves:
                c = self.null.expand(n) if uncond else job.cond
                xs.append(job.x)
                ts.append(t.expand(n))
                embs.append(c.emb)
                states.append(c.states)
                masks.append(c.mask)
        out = self.prior.prior(
            torch.cat(xs).to(self.dtype),
            timestep=torch.cat(ts),
            proj_embedding=torch.cat(embs).to(self.dtype),
            encoder_hidden_states=torch.cat(states).to(self.dtype),
            attention_mask=torch.cat(masks),
        ).predicted_image_embedding.float()
        start, finished = 0, []
        for job in self.running:
            pred, start = job.guided(out, start)
            timesteps = job.scheduler.timesteps
            t = timesteps[job.index]
            prev = timesteps[job.index + 1] if job.index + 1 < len(timesteps) else None
            job.x = job.scheduler.step(
                pred, timestep=t, sample=job.x, generator=job.generators, prev_timestep=prev
            ).prev_sample
            job.index += 1
            done = job.index == job.total
            result = (lambda job=job: self._result(job)) if done else None
            if self._leaves(job, progress=None, result=result):
                finished.append(job)
        self.running = [job for job in self.running if job not in finished]

    def _result(self, job: _Job) -> Tensor:
        return self.prior.prior.post_process_latents(job.x.to(self.dtype)).float()
