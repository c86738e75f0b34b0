"""The clock of a training loop: its time limit, the LR schedule planned to it, cadences."""

from __future__ import annotations

import time

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
