"""The one engine loop of the samplers (LM, decoder, prior): one thread, a row budget, jobs
that join between steps and leave when done.

A job is anything with ``rows`` (its share of the budget) and a ``future`` that the engine
settles. Each iteration admits waiting jobs first come, first served while they fit (all at
once with ``static=True``: only when nothing runs), runs ``_admit(job)`` for each (a job that
cannot start fails alone), then one ``_step()`` for every running job (a step that raises fails
the running jobs; the engine keeps serving). A subclass defines ``_step()``: one model call for
every running job, then each job's own sampler step, removing the jobs that are done.

``StepJob`` is what the diffusion samplers' jobs share (a scheduler, the current sample, a
guidance scale); the LM's requests (``tessera.lm.engine``) hold KV-cache rows instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from tessera.common.errors import Cancelled, InvalidArgument, Unavailable


def settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Resolve a sampler's request future unless its caller cancelled it meanwhile
    (``set_result`` on a cancelled future would raise inside the sampling thread)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class StepJob:
    """What a step-level diffusion sampler's job shares: a ``scheduler`` with its
    ``timesteps``, the current sample ``x`` (one row per image), a guidance scale, the steps
    taken, and the rows it takes of the budget (each image once per conditioning). Subclasses
    are dataclasses with those fields and a ``future``."""

    scheduler: Any
    x: torch.Tensor
    guidance: float
    index: int  # scheduler steps taken

    @property
    def total(self) -> int:
        return len(self.scheduler.timesteps)

    @property
    def halves(self) -> tuple[bool, ...]:
        """The passes each image needs, as "unconditional?" flags: scale 1 is the
        conditional model alone, 0 the unconditional one alone, and any other scale both
        (mixed as uncond + scale * (cond - uncond))."""
        if self.guidance == 1.0:
            return (False,)
        if self.guidance == 0.0:
            return (True,)
        return (False, True)

    @property
    def rows(self) -> int:
        return self.x.shape[0] * len(self.halves)

    def guided(self, out: torch.Tensor, start: int) -> tuple[torch.Tensor, int]:
        """This job's output of one model call over every running row: its rows from
        ``start`` (one block per entry of ``halves``), mixed by the guidance scale; and where
        the next job's rows start."""
        n = self.x.shape[0]
        if len(self.halves) == 1:
            return out[start : start + n], start + n
        cond, uncond = out[start : start + n], out[start + n : start + 2 * n]
        return uncond + self.guidance * (cond - uncond), start + 2 * n

    def stopped(self) -> Cancelled:
        return Cancelled(f"sampling cancelled at step {self.index}/{self.total}")


class StepLoop:
    """``_enqueue(job)`` from any thread; the loop admits waiting jobs first come, first
    served, while they fit in ``max_rows``, and runs a step while any job is running.

    ``static=True`` turns admission between steps off: waiting jobs join only when the running
    ones have all left (classic request-level batching, the baseline ``make bench`` measures
    against). ``resize_when_idle``: a new ``max_rows`` waits until no job runs and is applied
    by ``_resize`` (an engine whose rows are allocated memory: the LM's KV cache).

    Counters: ``calls`` (iterations, counted before each step: the step settles the futures of
    the jobs it finishes, and a caller woken by one must see the count) and ``max_running``
    (the most rows in one step).
    """

    resize_when_idle = False
    rows_name = "rows"  # in the error for a request larger than the budget

    def __init__(self, name: str, max_rows: int, *, static: bool = False) -> None:
        self.name = name
        self.max_rows = max_rows
        self.static = static
        self.pending_max_rows: int | None = None
        self.running: list[Any] = []  # admission order
        self.waiting: list[Any] = []
        self.lock = threading.Condition()
        self.closed = False
        self.calls = 0
        self.max_running = 0
        self._reset()
        thread_name = f"{name.lower()}-step-batch"
        self.thread = threading.Thread(target=self._loop, name=thread_name, daemon=True)
        self.thread.start()

    @property
    def running_rows(self) -> int:
        return sum(job.rows for job in self.running)

    def set_max_rows(self, max_rows: int) -> None:
        """Set the row budget: at once, or with ``resize_when_idle`` when no job runs."""
        with self.lock:
            if self.resize_when_idle:
                self.pending_max_rows = max_rows
            else:
                self.max_rows = max_rows
            self.lock.notify()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.lock.notify()
        self.thread.join(timeout=10)

    def _enqueue(self, job: Any) -> Future:
        if job.rows > self.max_rows:
            raise InvalidArgument(
                f"request needs {job.rows} {self.rows_name}; this replica has {self.max_rows}"
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
        """Set up derived state: at the start and after a failed step (whose running jobs
        were failed)."""

    def _resize(self, max_rows: int) -> None:
        """With ``resize_when_idle``: reallocate for ``max_rows`` (no job is running)."""

    def _leaves(
        self, job: Any, progress: Callable[[], bool | None] | None, result: Callable | None
    ) -> bool:
        """After a job's step: call ``progress`` (its report, when one is due), then settle
        ``result()`` (given once the job has done all its steps). True when the job leaves:
        done, cancelled by its caller (``future.cancel()``) or by its callback returning False
        (``job.stopped()``), or failed by a broken callback (that job alone)."""
        if job.future.done():
            return True
        if progress is not None:
            try:
                keep = progress()
            except Exception as e:  # a broken callback fails its own request only
                settle(job.future, error=e)
                return True
            if keep is not None and not keep:
                settle(job.future, error=job.stopped())
                return True
        if result is not None:
            settle(job.future, result())
            return True
        return False

    # ---------------------------------------------------------------- the loop
    def _take_admissible(self) -> list[Any]:
        """Waiting jobs that fit in the free rows, first come first served (under the lock)."""
        self.waiting = [job for job in self.waiting if not job.future.cancelled()]
        if self.pending_max_rows is not None and not self.running:
            self._resize(self.pending_max_rows)
            self.max_rows, self.pending_max_rows = self.pending_max_rows, None
        if self.static and self.running:
            return []
        free, admitted = self.max_rows - self.running_rows, []
        while self.waiting and self.waiting[0].rows <= free:
            free -= self.waiting[0].rows
            admitted.append(self.waiting.pop(0))
        return admitted

    def _loop(self) -> None:
        while True:
            with self.lock:
                while not self.closed and not self.waiting and not self.running:
                    self.lock.wait()
                if self.closed:
                    break
                admitted = self._take_admissible()
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
                self.calls += 1
                self.max_running = max(self.max_running, self.running_rows)
                try:
                    self._step()
                except Exception as e:  # fail the running requests, keep serving new ones
                    for job in self.running:
                        settle(job.future, error=e)
                    self.running = []
                    self._reset()
        for job in self.waiting + self.running:
            settle(job.future, error=Unavailable(f"the {self.name} sampler shut down"))
