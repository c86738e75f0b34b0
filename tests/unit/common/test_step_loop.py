"""StepLoop, the one engine loop, on a model-free engine: admission, static mode, resizing,
failures and shutdown."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

import pytest

from tessera.common.errors import Cancelled, InvalidArgument, Unavailable
from tessera.common.step_loop import StepLoop

TIMEOUT = 30


@dataclass(eq=False)
class Job:
    name: str
    rows: int
    steps: int
    future: Future = field(default_factory=Future)
    index: int = 0

    def stopped(self) -> Cancelled:
        return Cancelled(f"{self.name} stopped")


class Counting(StepLoop):
    """Each step advances every running job by one; a job settles with its name when done.
    The first step waits for ``gate`` (so that others can queue behind it)."""

    def __init__(self, max_rows: int = 4, **kwargs) -> None:
        self.gate, self.stepping = threading.Event(), threading.Event()
        self.batches: list[list[str]] = []  # the running jobs of each step
        self.refused: set[str] = set()  # _admit raises for these
        self.fail_next = False
        self.resized: list[int] = []
        super().__init__("counting", max_rows, **kwargs)

    def submit(self, name: str, rows: int = 1, steps: int = 3) -> Future:
        return self._enqueue(Job(name, rows, steps))

    def _admit(self, job: Job) -> None:
        if job.name in self.refused:
            raise RuntimeError(f"cannot start {job.name}")

    def _step(self) -> None:
        self.stepping.set()
        self.gate.wait(TIMEOUT)
        self.batches.append([job.name for job in self.running])
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the step broke")
        finished = []
        for job in self.running:
            job.index += 1
            result = (lambda job=job: job.name) if job.index == job.steps else None
            if self._leaves(job, None, result):
                finished.append(job)
        self.running = [job for job in self.running if job not in finished]

    def _resize(self, max_rows: int) -> None:
        self.resized.append(max_rows)


class ResizedWhenIdle(Counting):
    resize_when_idle = True


@pytest.fixture()
def loop():
    engine = Counting()
    yield engine
    engine.gate.set()
    engine.close()


def hold_then_queue(engine: Counting, *names: str, rows: int = 1) -> tuple[Future, list]:
    """Start job "a", queue ``names`` (the first with ``rows``) while its first step waits,
    then let it go."""
    first = engine.submit("a")
    assert engine.stepping.wait(TIMEOUT)
    queued = [engine.submit(name, rows if i == 0 else 1) for i, name in enumerate(names)]
    engine.gate.set()
    return first, queued


def test_a_job_joins_the_running_ones_at_the_next_step(loop):
    first, (late,) = hold_then_queue(loop, "b")
    assert first.result(TIMEOUT) == "a" and late.result(TIMEOUT) == "b"
    assert loop.batches == [["a"], ["a", "b"], ["a", "b"], ["b"]]
    assert loop.calls == 4 and loop.max_running == 2


def test_static_mode_admits_only_when_nothing_runs():
    engine = Counting(static=True)
    try:
        first, (late,) = hold_then_queue(engine, "b")
        assert first.result(TIMEOUT) == "a" and late.result(TIMEOUT) == "b"
    finally:
        engine.close()
    assert engine.batches == [["a"]] * 3 + [["b"]] * 3
    assert engine.max_running == 1


def test_jobs_wait_while_the_rows_are_taken_first_come_first_served(loop):
    first, (big, small) = hold_then_queue(loop, "big", "small", rows=4)  # big needs all 4
    assert [f.result(TIMEOUT) for f in (first, big, small)] == ["a", "big", "small"]
    assert loop.batches == [["a"]] * 3 + [["big"]] * 3 + [["small"]] * 3


def test_a_request_larger_than_the_budget_is_refused(loop):
    with pytest.raises(InvalidArgument, match="needs 5 rows; this replica has 4"):
        loop.submit("huge", rows=5)


def test_a_job_that_cannot_start_fails_alone(loop):
    loop.refused.add("b")
    first, (bad, good) = hold_then_queue(loop, "b", "c")
    with pytest.raises(RuntimeError, match="cannot start b"):
        bad.result(TIMEOUT)
    assert first.result(TIMEOUT) == "a" and good.result(TIMEOUT) == "c"


def test_a_failed_step_fails_the_running_jobs_and_the_loop_keeps_serving(loop):
    loop.fail_next = True
    first, (late,) = hold_then_queue(loop, "b")
    with pytest.raises(RuntimeError, match="the step broke"):
        first.result(TIMEOUT)
    assert late.result(TIMEOUT) == "b"  # queued during the failed step: not running yet
    assert loop.submit("c").result(TIMEOUT) == "c"


def test_a_cancelled_waiting_job_never_starts(loop):
    first, (doomed, other) = hold_then_queue(loop, "b", "c")
    doomed.cancel()
    assert first.result(TIMEOUT) == "a" and other.result(TIMEOUT) == "c"
    assert not any("b" in batch for batch in loop.batches[1:])


def test_the_budget_changes_at_once_or_when_idle():
    now = Counting()
    now.set_max_rows(8)
    assert now.max_rows == 8 and now.resized == []
    now.close()

    idle = ResizedWhenIdle()
    try:
        first = idle.submit("a")
        assert idle.stepping.wait(TIMEOUT)
        idle.set_max_rows(8)  # "a" is running: the new budget waits
        assert idle.max_rows == 4
        idle.gate.set()
        first.result(TIMEOUT)
        assert idle.submit("b").result(TIMEOUT) == "b"  # the next admission resizes first
        assert idle.max_rows == 8 and idle.resized == [8]
    finally:
        idle.close()


def test_closing_fails_the_waiting_jobs_and_refuses_new_ones(loop):
    first = loop.submit("a")
    assert loop.stepping.wait(TIMEOUT)
    late = loop.submit("b")
    with loop.lock:  # closed before the loop looks at the queue again
        loop.closed = True
    loop.gate.set()
    with pytest.raises(Unavailable, match="counting sampler shut down"):
        late.result(TIMEOUT)
    with pytest.raises(Unavailable, match="shut down"):
        first.result(TIMEOUT)  # its step ran, but the loop stopped before its last
    with pytest.raises(Unavailable, match="is shut down"):
        loop.submit("c")
