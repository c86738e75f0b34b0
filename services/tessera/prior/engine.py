"""Step-level batching for the diffusion prior: requests at different denoising steps share
one transformer call per step (as the decoder's ``DenoiseBatcher`` does for the UNet).

One thread runs the loop. A request is admitted by encoding its condition (the prompt's
token states and CLIP text embedding, run through the transformer once: their keys and values
are the same at every step); after that each iteration runs the 3 step tokens of every
running row — each at its own timestep, against its own condition — in one call, then each
request takes its own DDIM step. A request arriving mid-way joins at the next iteration; one
that has done its steps leaves at once.

Why: at batch 1 a prior step is bound by reading the weights, not by arithmetic (a batch of
16 prompts costs ~3x one, not 16x). Served requests reach the Prior one at a time, spread out,
so request-level batching saw batches of one; sharing steps lets requests that overlap in
time share the weight reads, and a newcomer no longer waits for a running batch to finish.

Rows: a request of n prompts with k candidates each has n*k rows per conditioning; a guided
one (scale not 0 or 1) has a conditional and an unconditional row for each. Each prompt's
noise comes from its own seed, as in ``DiffusionPrior.sample``: results match it up to float
rounding in batched matmuls.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tessera.common.device import make_generator
from tessera.common.step_loop import StepJob, StepLoop
from tessera.common.text_encoder import TextBatch
from tessera.prior.model import DiffusionPrior, EncodedCondition
from tessera.prior.sampling import check_sample_args, select_candidates
from tessera.prior.scheduler import PriorDDIMScheduler

StepFn = Callable[[int, int], bool | None]  # (steps done, total) -> False cancels


@dataclass(eq=False)
class _Job(StepJob):
    text: TextBatch  # n prompts
    text_emb: Tensor  # (n, D) CLIP text embeddings
    guidance: float
    k: int  # candidates per prompt
    scheduler: PriorDDIMScheduler
    x: Tensor  # (n*k, D) current sample (standardised space)
    future: Future
    on_step: StepFn | None
    cond: EncodedCondition | None = None  # (n*k rows), set when admitted
    index: int = 0  # DDIM steps taken


class PriorBatcher(StepLoop):
    """``submit()`` from any thread; the future resolves to (n, D) L2-normalised CLIP image
    embeddings, one per prompt (its best of k candidates)."""

    def __init__(self, prior: DiffusionPrior, max_rows: int = 64) -> None:
        self.prior = prior.eval()
        self.device = prior.emb_mean.device
        with torch.inference_mode():
            self.null = self._null_condition()
        super().__init__("prior", max_rows)

    def submit(
        self,
        text: TextBatch,
        text_emb: Tensor,
        *,
        seeds: list[int],
        guidance_scale: float | None = None,
        steps: int | None = None,
        n_candidates: int | None = None,
        on_step: StepFn | None = None,
    ) -> Future:
        """Queue n prompts (``text`` and ``text_emb`` with n rows, one seed each).
        ``future.cancel()`` drops the request at the next step."""
        cfg = self.prior.config
        scale, steps, k = check_sample_args(
            cfg, text, text_emb, seeds, guidance_scale, steps, n_candidates
        )
        scheduler = PriorDDIMScheduler(self.prior.alphas_cumprod)
        scheduler.set_timesteps(steps)
        # Each prompt's k starting noises from its own generator, on the CPU: the same on
        # every device and whatever else is running (as DiffusionPrior.sample_candidates).
        cpu = torch.device("cpu")
        noise = [torch.randn(k, cfg.embed_dim, generator=make_generator(s, cpu)) for s in seeds]
        job = _Job(
            text=text,
            text_emb=text_emb.to(self.device).float(),
            guidance=scale,
            k=k,
            scheduler=scheduler,
            x=torch.cat(noise).to(self.device),
            future=Future(),
            on_step=on_step,
        )
        return self._enqueue(job)

    # ---------------------------------------------------------------- the loop's hooks
    def _null_condition(self) -> EncodedCondition:
        """The unconditional (dropped caption) condition: one row, shared by every request."""
        p = self.prior
        states = torch.zeros(1, 1, p.config.text_dim, device=self.device)
        mask = torch.ones(1, 1, dtype=torch.bool, device=self.device)
        temb = torch.zeros(1, p.config.embed_dim, device=self.device)
        drop = torch.ones(1, dtype=torch.bool, device=self.device)
        return p.encode_condition(*p.drop_conditions(states, mask, temb, drop))

    def _admit(self, job: _Job) -> None:
        """Encode the job's condition once; every step reuses its keys and values."""
        states = job.text.states.to(self.device).float()
        mask = job.text.mask.to(self.device)
        job.cond = self.prior.encode_condition(states, mask, job.text_emb).repeat_interleave(job.k)

    def _reset(self) -> None:
        self._batch: tuple[tuple[int, ...], EncodedCondition] | None = None

    def _batch_condition(self) -> EncodedCondition:
        """The running rows' conditions, padded to the longest and stacked in row order;
        rebuilt only when a request joins or leaves."""
        key = tuple(id(job) for job in self.running)
        if self._batch is not None and self._batch[0] == key:
            return self._batch[1]
        parts: list[EncodedCondition] = []
        for job in self.running:
            rows = job.x.shape[0]
            for uncond in job.halves:
                parts.append(self.null.expand(rows) if uncond else job.cond)
        width = max(part.key_ok.shape[1] for part in parts)
        kv = [
            (
                torch.cat([_pad_keys(part.kv[i][0], width) for part in parts]),
                torch.cat([_pad_keys(part.kv[i][1], width) for part in parts]),
            )
            for i in range(len(parts[0].kv))
        ]
        key_ok = torch.cat([F.pad(p.key_ok, (0, width - p.key_ok.shape[1])) for p in parts])
        batch = EncodedCondition(kv, key_ok)
        self._batch = (key, batch)
        return batch

    def _step(self) -> None:
        """One call for the step tokens of every running row, then each job's DDIM step."""
        xs, ts = [], []
        for job in self.running:
            t = int(job.scheduler.timesteps[job.index])
            for _ in job.halves:
                xs.append(job.x)
                ts.append(torch.full((job.x.shape[0],), t, dtype=torch.long, device=self.device))
        x0_all = self.prior.denoise(torch.cat(xs), torch.cat(ts), self._batch_condition())
        start, finished = 0, []
        for job in self.running:
            x0, start = job.guided(x0_all, start)
            t = int(job.scheduler.timesteps[job.index])
            job.x = job.scheduler.step(x0, t, job.x)
            job.index += 1
            if self._report(job):
                finished.append(job)
        self.running = [job for job in self.running if job not in finished]

    def _report(self, job: _Job) -> bool:
        """Progress (every step), cancellation and completion for one job; True when it
        leaves."""
        done, total = job.index, job.total
        on_step = job.on_step
        return self._leaves(
            job,
            progress=(lambda: on_step(done, total)) if on_step is not None else None,
            result=(lambda: self._result(job)) if done == total else None,
        )

    def _result(self, job: _Job) -> Tensor:
        """Each prompt's best candidate. After the last step (prev = -1) x is the final x0
        prediction itself."""
        n, d = job.text_emb.shape
        candidates = F.normalize(self.prior.denormalize(job.x), dim=-1).view(n, job.k, d)
        return select_candidates(candidates, F.normalize(job.text_emb, dim=-1))


def _pad_keys(kv: Tensor, width: int) -> Tensor:
    """(B, H, C, hd) keys or values -> (B, H, width, hd), zeros after C (masked out)."""
    return F.pad(kv, (0, 0, 0, width - kv.shape[2]))
