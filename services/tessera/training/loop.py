"""A training loop's parts: its clock (time limit, the LR schedule planned to it), the loop
over steps with its progress bar (``Steps``), shuffled batches (``Epochs``), cadences."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tessera.common.checkpoint import CONFIG_NAME
from tessera.training.optim import lr_at, planned_steps


class Clock:
    """Started at ``start`` of ``total`` steps with an optional ``max_minutes`` limit."""

    def __init__(self, start: int, total: int, max_minutes: float | None) -> None:
        self.t0 = time.time()
        self.start, self.total, self.max_minutes = start, total, max_minutes

    def elapsed(self) -> float:
        return time.time() - self.t0

    def out_of_time(self) -> bool:
        return bool(self.max_minutes) and self.elapsed() > 60 * self.max_minutes

    def lr(self, step: int, base: float, warmup: int) -> float:
        """Warm-up + cosine aimed at the step the time limit will stop at (or ``total``), so
        that a time-boxed run still decays instead of stopping at a high learning rate."""
        done, left = step - self.start, self.total - self.start
        plan = self.start + planned_steps(done, left, self.elapsed(), self.max_minutes)
        return lr_at(step, plan, base, min(warmup, plan // 10))


def due(step: int, every: int, total: int) -> bool:
    """Whether a periodic action (eval, checkpoint, samples) falls on ``step``."""
    return step % every == 0 or step == total


class Steps:
    """The loop of a run from ``step`` to ``total``: its progress bar and ``Clock``.
    ``running(step)`` is False at ``total`` or, after saying so, past the time limit (then
    ``timed_out`` is set: the trainer saves what it has)."""

    def __init__(self, step: int, total: int, max_minutes: float | None, desc: str) -> None:
        self.total = total
        self.bar = tqdm(total=total, initial=step, desc=desc, unit="step")
        self.clock = Clock(step, total, max_minutes)
        self.timed_out = False

    def running(self, step: int) -> bool:
        if step >= self.total:
            return False
        if self.clock.out_of_time():
            self.bar.write(f"time limit reached at step {step}")
            self.timed_out = True
            return False
        return True

    def finish(self, out: Path, checkpoint: Callable[[], None]) -> None:
        """Close the bar; ``checkpoint()`` when the time limit stopped the run or ``out``
        holds no checkpoint yet (else the last due one is the run's)."""
        self.bar.close()
        if self.timed_out or not (Path(out) / CONFIG_NAME).is_file():
            checkpoint()


class Epochs:
    """Batches of ``batch_size`` row indices out of ``n``: each epoch a fresh permutation from
    ``rng`` (drawn when the next batch would not fit: an epoch's last partial batch is
    dropped)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator) -> None:
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self.order, self.cursor = rng.permutation(n), 0

    def next(self) -> np.ndarray:
        if self.cursor + self.batch_size > len(self.order):
            self.order, self.cursor = self.rng.permutation(self.n), 0
        idx = self.order[self.cursor : self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return idx
