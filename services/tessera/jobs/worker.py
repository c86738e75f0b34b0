"""The worker loop: take jobs from the queue, run them through an executor, commit results.

An executor (``executors.py``) is the route code in production (``Pipelines.generate``),
``tessera.jobs.synthetic.SyntheticExecutor`` in tests. It must not block the event loop for
long (the heartbeat that keeps its job from being reclaimed runs on it).

One worker = one Redis consumer with ``concurrency`` slots (asyncio tasks). Each slot takes
a message (a reclaimed stale one, else high priority, else normal), ``start``s it (atomically
checks cancel/attempts and takes a lease), runs the executor publishing progress, then
``commit``s the result or ``fail``s the attempt. A heartbeat task renews the visibility of
every message this worker holds, so the visibility timeout only fires when the worker died.
While Redis is down the slots back off and commits retry (``redis_retry.py``).

Run standalone: ``python -m tessera.jobs.worker --redis-url URL [--bundle-dir DIR]`` runs the
real routes over the bundle's models loaded in the process; ``--executor module:attr``
(e.g. ``tessera.jobs.synthetic:SyntheticExecutor``) runs another executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import traceback
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from tessera.common import metrics
from tessera.common.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    TesseraError,
    public_message,
)
from tessera.jobs import redis_retry
from tessera.jobs.executors import Executor
from tessera.jobs.queue import Delivery, JobQueue
from tessera.jobs.redis_retry import REDIS_DOWN, Backoff, retrying
from tessera.routes.edit_requests import JobRequest, parse_job_request
from tessera.v1 import generation_pb2

log = logging.getLogger(__name__)

# Errors that no retry can fix: the job fails at once.
PERMANENT_ERRORS = (InvalidArgument, NotFound, AlreadyExists)


@dataclass
class _Held:
    delivery: Delivery
    lease: str = ""
    lost: bool = False  # another worker reclaimed the message: stop, touch nothing
    cancel: bool = False  # a DELETE arrived: stop and mark cancelled
    queue_s: float | None = None  # submit → first start, for the time-in-queue metric


class Worker:
    """A queue consumer with ``concurrency`` slots; ``await run()`` until ``stop()``. It
    drives ``queue.consumer`` (the worker primitives) and reads ``queue.config``."""

    def __init__(
        self,
        queue: JobQueue,
        executor: Executor,
        *,
        concurrency: int = 1,
        name: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.queue = queue
        self.consumer = queue.consumer
        self.executor = executor
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.held: dict[tuple[str, str], _Held] = {}
        self.backlog: deque[Delivery] = deque()
        self.stats = {"succeeded": 0, "failed": 0, "retried": 0, "cancelled": 0, "lost": 0}
        self._slots: dict[int, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._cursors: dict[str, str] = {}
        self._next_reclaim = 0.0
        self._vt = queue.config.visibility_timeout_s

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the heartbeat or a slot task died (the health check's signal)."""
        if self._heartbeat is None or self._heartbeat.done():
            return False
        return all(not t.done() for i, t in self._slots.items() if i < self.concurrency)

    async def run(self) -> None:
        """Run until ``stop()`` (or cancellation); slots survive Redis outages."""
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="jobs-heartbeat")
        self._resize()
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown()

    def set_concurrency(self, concurrency: int) -> None:
        """Change the number of slots live; extra slots exit after their current job."""
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        if self._heartbeat is not None:
            self._resize()

    def stop(self) -> None:
        self._stopping.set()

    def _resize(self) -> None:
        for i in range(self.concurrency):
            task = self._slots.get(i)
            if task is None or task.done():
                self._slots[i] = asyncio.create_task(self._slot(i), name=f"jobs-slot-{i}")

    async def _shutdown(self) -> None:
        await cancel_and_wait(self._slots.values())
        if self._heartbeat is not None:
            await cancel_and_wait([self._heartbeat])
        # Hand running jobs back now rather than after a visibility timeout.
        for held in list(self.held.values()):
            try:
                if held.lease:
                    await self.consumer.release(held.delivery.job_id, held.lease)
            except Exception:  # noqa: BLE001 - best effort; reclaim covers it
                log.warning("could not release job %s", held.delivery.job_id)
        self.held.clear()
        try:
            await self.consumer.deregister(self.name)
        except Exception:  # noqa: BLE001
            pass

    # -- loops --------------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        period = max(0.1, self._vt / 3)
        redis_down = False
        while True:
            try:
                held = list(self.held.values())
                owners = await self.consumer.heartbeat(
                    self.name, [h.delivery for h in held], self.concurrency
                )
                for h, owner in zip(held, owners, strict=True):
                    self._check_owner(h, owner)
                redis_down = False
            except REDIS_DOWN as e:
                if not redis_down:
                    log.warning("heartbeat: redis unavailable (%s)", e)
                redis_down = True
            except ResponseError as e:
                log.warning("heartbeat failed: %s", e)
            await asyncio.sleep(period)

    def _check_owner(self, h: _Held, owner: str) -> None:
        """Act on who holds a message we run, as the heartbeat found it."""
        if owner == self.name or h.lost or self.held.get(h.delivery.key) is not h:
            return  # still ours, already handled, or our slot has finished with it since
        if owner:
            # Another worker reclaimed it: our heartbeats stopped reaching Redis for longer
            # than the visibility timeout while it was up (a blocked event loop, a partition).
            log.warning(
                "job %s was reclaimed by worker %s; stopping our run", h.delivery.job_id, owner
            )
            h.lost = True
        elif h.lease:
            # No longer pending and our slot still has it: the commit that ended it is ours,
            # in flight (acknowledged before its reply reached the slot), or the job was
            # cancelled or finished otherwise. The lease check at the next progress step and
            # the first-writer-wins commit sort it out; nobody took it over.
            log.debug("job %s is no longer pending", h.delivery.job_id)

    async def _slot(self, index: int) -> None:
        backoff = Backoff(redis_retry.SLOT_FIRST_S, redis_retry.SLOT_DOWN_CAP_S, jitter=True)
        while not self._stopping.is_set() and index < self.concurrency:
            try:
                delivery = await self._next()
                if delivery is not None:
                    await self._process(delivery)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except REDIS_DOWN as e:
                if backoff.fresh:  # once per outage, not per retry
                    log.warning("slot %d: redis unavailable (%s); retrying", index, e)
                await backoff.wait()
            except Exception:
                log.exception("slot %d: unexpected error", index)
                await backoff.wait(cap=redis_retry.SLOT_ERROR_CAP_S, jitter=False)

    async def _next(self) -> Delivery | None:
        """Next message: local backlog, a stale one (now and then), high, normal, or wait."""
        if self.backlog:
            return self.backlog.popleft()
        now = time.monotonic()
        if now >= self._next_reclaim:
            found = await self.consumer.reclaim(self.name, self._cursors)
            if found:
                return self._hold(found)
            self._next_reclaim = now + max(0.1, self._vt / 4)
        got = await self.consumer.read(self.name, block=False)
        if not got:
            got = await self.consumer.read(self.name, block=True)
        return self._hold(got) if got else None

    def _hold(self, deliveries: list[Delivery]) -> Delivery | None:
        # A message we already hold can come back from XAUTOCLAIM if our heartbeat was late;
        # the slot running it keeps it.
        fresh = [d for d in deliveries if d.key not in self.held]
        # Register before anything else awaits, so the heartbeat renews all of them.
        for d in fresh:
            self.held[d.key] = _Held(d)
        self.backlog.extend(fresh[1:])
        return fresh[0] if fresh else None

    # -- one job ------------------------------------------------------------------------------

    async def _process(self, d: Delivery) -> None:
        held = self.held.setdefault(d.key, _Held(d))
        held.lease = uuid.uuid4().hex
        try:
            # Retried with the same lease while Redis is down: a start whose reply was lost
            # is found again, not counted as a second attempt.
            started = await retrying(lambda: self.consumer.start(d, self.name, held.lease))
            if not started.run:
                log.debug("job %s skipped: %s", d.job_id, started.reason)
                return
            if started.attempts == 1:  # stream ids are "<enqueue ms>-<seq>"
                held.queue_s = time.time() - int(d.msg_id.split("-")[0]) / 1000
            try:
                params = parse_job_request(started.request_json)
            except ValueError as e:
                await self._fail(held, InvalidArgument(f"stored request is invalid: {e}"))
                return
            await self._execute(held, params)
        finally:
            if self.held.get(d.key) is held:
                del self.held[d.key]

    async def _execute(self, held: _Held, params: JobRequest) -> None:
        d = held.delivery

        async def on_event(event: generation_pb2.GenerateStreamResponse) -> bool:
            if held.lost or held.cancel:
                return False
            try:
                verdict = await self.consumer.progress(d.job_id, held.lease, event)
            except REDIS_DOWN:
                return True  # progress is best effort; the commit retries until Redis is back
            if verdict == 0:
                held.lost = True
            elif verdict == 2:
                held.cancel = True
            return verdict == 1

        t0 = time.monotonic()
        deadline = asyncio.timeout(self.queue.config.run_timeout_s)
        try:
            async with deadline:
                result = await self.executor(params, on_event)
            if deadline.expired():  # its cancel was lost (3.11's wait_for, gh-86296): late is late
                raise TimeoutError("the run finished after its deadline")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - counted, then handled below
            error: Exception = e
            if deadline.expired():
                limit = self.queue.config.run_timeout_s
                error = DeadlineExceeded(f"the job ran longer than its {limit:g} s limit")
                error.__cause__ = e  # the dead letter's detail shows where it was stuck
            metrics.record_request(params.route, error, "job", time.monotonic() - t0)
            await self._after_failure(held, error)
            return
        metrics.record_request(params.route, "ok", "job", time.monotonic() - t0)
        # Commit even if the lease was lost: first writer wins, and this result is valid.
        outcome = await retrying(
            lambda: self.consumer.commit(d, result, service_s=time.monotonic() - t0),
            give_up_s=max(30.0, 3 * self._vt),
        )
        if outcome == "committed":
            self.stats["succeeded"] += 1
            _record(held, "succeeded")
        elif outcome == "cancelled":
            self.stats["cancelled"] += 1
            _record(held, "cancelled")

    async def _after_failure(self, held: _Held, error: Exception) -> None:
        """A run that raised: lost to another worker, cancelled by its client, or failed."""
        if held.lost:
            self.stats["lost"] += 1
        elif isinstance(error, Cancelled) and held.cancel:
            await retrying(lambda: self.consumer.mark_cancelled(held.delivery.job_id))
            self.stats["cancelled"] += 1
            _record(held, "cancelled")
        else:
            await self._fail(held, error)

    async def _fail(self, held: _Held, error: BaseException) -> None:
        retryable = not isinstance(error, PERMANENT_ERRORS)
        if isinstance(error, TesseraError):
            message = public_message(error)
        else:
            # The client sees the exception type only; the dead letter keeps the traceback.
            message = f"internal error ({type(error).__name__})"
            log.error("job %s failed: %r", held.delivery.job_id, error)
        detail = "".join(traceback.format_exception(error))[-4000:]
        outcome = await retrying(
            lambda: self.consumer.fail(
                held.delivery, held.lease, message, retryable=retryable, detail=detail
            )
        )
        self.stats["retried" if outcome == "retry" else "failed"] += 1
        _record(held, "retried" if outcome == "retry" else "failed")


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, recheck_s: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all have ended, cancelling again any that go on.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` drops a
    cancellation that arrives as its inner future completes (fixed in 3.12, gh-86296),
    and redis-py wraps every socket write in it. A loop that gets such a cancel carries on
    as if nothing happened, and a shutdown that waits for it hangs for good."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=recheck_s)


def _record(held: _Held, outcome: str) -> None:
    """Job outcome and time in queue, by priority (the stream a job came from)."""
    priority = "high" if held.delivery.stream.endswith("high") else "normal"
    metrics.record_job(outcome, held.queue_s, priority=priority)


if __name__ == "__main__":  # python -m tessera.jobs.worker: the command line lives apart
    from tessera.jobs.worker_cli import main

    raise SystemExit(main())
