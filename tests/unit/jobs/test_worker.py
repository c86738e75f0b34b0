"""The worker's lifecycle: shutdown ends every task it started, even one that lost a cancel."""

from __future__ import annotations

import asyncio
import time

from tessera.jobs.queue import Delivery, JobQueue
from tessera.jobs.synthetic import SyntheticExecutor
from tessera.jobs.worker import Worker, cancel_and_wait

from .conftest import config


async def test_cancel_and_wait_cancels_again_a_task_that_lost_the_first_cancel():
    lost = []

    async def stubborn() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            lost.append(time.monotonic())  # carry on, as a dropped cancellation does
        await asyncio.sleep(60)

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    t0 = time.monotonic()
    await asyncio.wait_for(cancel_and_wait([task], recheck_s=0.05), 5)
    assert task.cancelled() and len(lost) == 1
    assert time.monotonic() - t0 < 2


class LosesOneHeartbeatCancel(JobQueue):
    """A real queue whose heartbeat drops the first cancellation it gets, the way redis-py's
    socket writes can on Python 3.11 (``asyncio.wait_for`` returning a finished write)."""

    dropped = 0
    parked: asyncio.Event

    async def heartbeat(self, consumer: str, held: list[Delivery], slots: int) -> list[bool]:
        result = await super().heartbeat(consumer, held, slots)
        if not type(self).dropped:
            self.parked.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                type(self).dropped += 1
        return result


async def test_shutdown_ends_even_when_the_heartbeat_drops_a_cancel(redis_url):
    queue = LosesOneHeartbeatCancel.from_url(redis_url, config())
    queue.parked = asyncio.Event()
    try:
        worker = Worker(queue, SyntheticExecutor(step_s=0.01), concurrency=2)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(queue.parked.wait(), 10)  # the heartbeat waits in its call
        worker.stop()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 10)
        assert LosesOneHeartbeatCancel.dropped == 1
        assert time.monotonic() - t0 < 5
        assert not worker.alive
    finally:
        await queue.close()
