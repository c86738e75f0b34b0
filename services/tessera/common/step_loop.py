"""The loop the step-level samplers share (decoder, prior): one thread, a row budget, jobs
that join between steps and leave when done.

A subclass defines ``_step()`` (one model call for every running job, then each job's own
sampler step, removing the jobs that are done) and may define ``_admit(job)`` (work a job
needs once before its first step). Jobs are ``StepJob``s with a ``future`` that the
subclass settles.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import torch

from tessera.common.errors import InvalidArgument, Unavailable
from tessera.common.serving import settle


def conditionings(scale: float) -> tuple[bool, ...]:
    """The passes a classifier-free-guided sample needs per image, as "unconditional?" flags:
    scale 1 is the conditional model alone, 0 the unconditional one alone, and any other
    scale both (mixed as uncond + scale * (cond - uncond))."""
    if scale == 1.0:
        return (False,)
    if scale == 0.0:
        return (True,)
    return (False, True)


class StepJob:
    """What a step-level sampler's job shares: a ``scheduler`` with its ``timesteps``, the
    current sample ``x`` (one row per image), a guidance scale, and the rows it takes of the
    budget (each image once per conditioning). Subclasses are dataclasses with those fields."""

    scheduler: Any
    x: torch.Tensor
    guidance: float

    @property
    def total(self) -> int:
        return len(self.scheduler.timesteps)

    @property
    def halves(self) -> tuple[bool, ...]:
        """Which conditionings each image needs: (cond,), (uncond,) or both."""
        return conditionings(self.guidance)

    @property
    def rows(self) -> int:
        return self.x.shape[0] * len(self.halves)


class StepLoop:
    """``_enqueue(job)`` from any thread; the loop admits waiting jobs first come, first
    served, while they fit in ``max_rows``, and runs a step while any job is running."""

    def __init__(self, name: str, max_rows: int) -> None:
        self.name = name
        self.max_rows = max_rows
        self.running: list[Any] = []
        self.waiting: list[Any] = []
        self.lock = threading.Condition()
        self.closed = False
        self.calls = 0  # steps run (one model call each)
        self.max_running = 0  # most rows in one step
        self.thread = threading.Thread(target=self._loop, name=f"{name}-step-batch", daemon=True)
        self.thread.start()

    @property
    def running_rows(self) -> int:
        return sum(job.rows for job in self.running)

    def set_max_rows(self, max_rows: int) -> None:
        with self.lock:
            self.max_rows = max_rows

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=10)

    def _enqueue(self, job: Any) -> Future:
        if job.rows > self.max_rows:
            raise InvalidArgument(
                f"request needs {job.rows} rows; this replica has {self.max_rows}"
            )
        with self.lock:
            if self.closed:
                raise Unavailable(f"the {self.name} sampler is shut down")
            self.waiting.append(job)
            self.lock.notify()
        return job.future

    # ---------------------------------------------------------------- subclass hooks
    def _admit(self, job: Any) -> None:
        """Work a job needs once, before its first step (none by default)."""

    def _step(self) -> None:
        raise NotImplementedError

    def _reset(self) -> None:
        """Forget derived state after a failed step (the running jobs were failed)."""

    # ---------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.closed and not self.waiting and not self.running:
                    self.lock.wait()
                if self.closed:
                    break
                self.waiting = [job for job in self.waiting if not job.future.cancelled()]
                free, admitted = self.max_rows - self.running_rows, []
                while self.waiting and self.waiting[0].rows <= free:
                    free -= self.waiting[0].rows
                    admitted.append(self.waiting.pop(0))
            with torch.inference_mode():
                for job in admitted:
                    try:
                        self._admit(job)
                    except Exception as e:  # a request that cannot start fails alone
                        settle(job.future, error=e)
                        continue
                    self.running.append(job)
                if not self.running:
                    continue
                # Counted before the step: it settles the futures of the jobs it finishes.
                self.calls += 1
                self.max_running = max(self.max_running, self.running_rows)
                try:
                    self._step()
                except Exception as e:  # fail the running requests, keep serving new ones
                    for job in self.running:
                        if not job.future.done():
                            settle(job.future, error=e)
                    self.running = []
                    self._reset()
        for job in self.waiting + self.running:
            if not job.future.done():
                settle(job.future, error=Unavailable(f"the {self.name} sampler shut down"))
