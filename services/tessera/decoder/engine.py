"""Step-level batching for the decoder: requests at different denoising steps share one model
call per step.

One thread runs the loop. Each running request keeps its own scheduler (its own step count,
sampler and guidance scale), latents and generators; every iteration stacks the rows of all
running requests — each at its own timestep — into one UNet call, then each request takes its
own scheduler step. A request arriving mid-way joins at the next iteration; one that has done
its steps leaves at once. A guided request contributes a conditional and an unconditional row
per image (one UNet call covers both); scale 1 or 0 contributes only the row it needs.

Each image draws its starting noise and every sampler noise from its own generator, as
``sample_latents`` does: results match it up to float rounding in batched matmuls.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from torch import Tensor

from tessera.common.device import make_generator
from tessera.common.step_loop import StepJob, StepLoop
from tessera.common.text_encoder import TextBatch
from tessera.decoder.model import LatentDecoder
from tessera.decoder.sampling import validate_request
from tessera.decoder.schedulers import NoiseSchedule, make_scheduler

ProgressFn = Callable[[int, int, Tensor], bool | None]


@dataclass(eq=False)
class _Job(StepJob):
    image_emb: Tensor  # (n, D)
    states: Tensor  # (n, T, 384)
    mask: Tensor  # (n, T)
    guidance: float
    scheduler: NoiseSchedule
    generators: list[torch.Generator]
    x: Tensor  # (n, C, h, w) current latents (normalised space)
    future: Future
    on_progress: ProgressFn | None
    every: int
    index: int = 0  # scheduler steps taken

    @property
    def n(self) -> int:
        return self.x.shape[0]


class DenoiseBatcher(StepLoop):
    """``submit()`` from any thread; the future resolves to (n, C, h, w) VQ-space latents."""

    def __init__(self, model: LatentDecoder, max_rows: int = 32) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        super().__init__("decoder", max_rows)

    def submit(
        self,
        image_emb: Tensor,
        text: TextBatch,
        *,
        seeds: list[int],
        steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str = "ddim",
        on_progress: ProgressFn | None = None,
        progress_every: int = 5,
    ) -> Future:
        """Queue one request: ``image_emb`` (n, D), ``text`` with n rows or one shared row.
        ``future.cancel()`` drops it at the next step."""
        steps, g = validate_request(
            self.model, image_emb, text, seeds, steps, guidance_scale, scheduler, progress_every
        )
        cfg = self.model.config
        n = image_emb.shape[0]
        states, mask = text.states.to(self.device), text.mask.to(self.device)
        if states.shape[0] == 1 and n > 1:
            states, mask = states.expand(n, -1, -1), mask.expand(n, -1)
        sched = self._scheduler(scheduler)
        sched.set_timesteps(steps, device=self.device)
        generators = [make_generator(s, self.device) for s in seeds]
        shape = (cfg.latent_channels, cfg.grid_size, cfg.grid_size)
        x = torch.stack(
            [torch.randn(shape, generator=gen, device=self.device) for gen in generators]
        )
        job = _Job(
            image_emb=image_emb.to(self.device, torch.float32),
            states=states,
            mask=mask,
            guidance=g,
            scheduler=sched,
            generators=generators,
            x=x * sched.init_noise_sigma,
            future=Future(),
            on_progress=on_progress,
            every=progress_every,
        )
        return self._enqueue(job)

    def _scheduler(self, name: str) -> NoiseSchedule:
        """A fresh scheduler for one request (``name``: "ddim" | "ddpm")."""
        return make_scheduler(name, **self.model.config.scheduler_kwargs())

    # ---------------------------------------------------------------- the loop's step
    def _step(self) -> None:
        """One UNet call for every running row, then each job's own scheduler step."""
        xs, ts, embs, states, masks, drops = [], [], [], [], [], []
        for job in self.running:
            t = job.scheduler.timesteps[job.index]
            for uncond in job.halves:
                xs.append(job.scheduler.scale_model_input(job.x, t))
                ts.append(t.expand(job.n))
                embs.append(job.image_emb)
                states.append(job.states)
                masks.append(job.mask)
                drops.append(torch.full((job.n,), uncond, device=self.device))
        width = max(s.shape[1] for s in states)  # pad text to the longest (masked out)
        states = [torch.nn.functional.pad(s, (0, 0, 0, width - s.shape[1])) for s in states]
        masks = [torch.nn.functional.pad(m, (0, width - m.shape[1])) for m in masks]
        drop = torch.cat(drops)
        out = self.model(
            torch.cat(xs),
            torch.cat(ts),
            torch.cat(embs),
            torch.cat(states),
            torch.cat(masks),
            drop_image=drop,
            drop_text=drop,
        )
        start, finished = 0, []
        for job in self.running:
            model_out, start = job.guided(out, start)
            t = job.scheduler.timesteps[job.index]
            result = job.scheduler.step(model_out, t, job.x, generator=job.generators)
            job.x = result.prev_sample
            job.index += 1
            if self._report(job, result.pred_original_sample):
                finished.append(job)
        self.running = [job for job in self.running if job not in finished]

    def _report(self, job: _Job, x0: Tensor) -> bool:
        """Preview (every ``every`` steps and at the last), cancellation and completion for
        one job; True when it leaves."""
        done, total, denormalize = job.index, job.total, self.model.denormalize_latents
        due = job.on_progress is not None and (done % job.every == 0 or done == total)
        return self._leaves(
            job,
            progress=(lambda: job.on_progress(done, total, denormalize(x0))) if due else None,
            result=(lambda: denormalize(job.x)) if done == total else None,
        )
