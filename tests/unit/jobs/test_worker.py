"""The worker's lifecycle: shutdown ends every task it started, even one that lost a cancel;
an attempt that runs past its time limit fails instead of holding its slot; the command line
runs the real routes unless told otherwise."""

from __future__ import annotations

import argparse
import asyncio
import time

import pytest

from tessera.common import metrics
from tessera.common.settings import get_settings
from tessera.jobs.consumer import QueueConsumer
from tessera.jobs.queue import Delivery, JobQueue, wait_for
from tessera.jobs.synthetic import SyntheticExecutor
from tessera.jobs.worker import Worker, cancel_and_wait
from tessera.jobs.worker_cli import add_arguments, executor_kwargs
from tessera.routes.schemas import GenerationParams

from .conftest import config, open_queue


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


class LosesOneHeartbeatCancel(QueueConsumer):
    """A real queue consumer whose heartbeat drops the first cancellation it gets, the way
    redis-py's socket writes can on Python 3.11 (``asyncio.wait_for`` returning a finished
    write)."""

    dropped = 0
    parked: asyncio.Event

    async def heartbeat(self, consumer: str, held: list[Delivery], slots: int) -> list[str]:
        result = await super().heartbeat(consumer, held, slots)
        if not type(self).dropped:
            self.parked.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                type(self).dropped += 1
        return result


async def test_shutdown_ends_even_when_the_heartbeat_drops_a_cancel(redis_url):
    queue = JobQueue.from_url(redis_url, config())
    consumer = queue.consumer = LosesOneHeartbeatCancel(queue.store)
    consumer.parked = asyncio.Event()
    try:
        worker = Worker(queue, SyntheticExecutor(step_s=0.01), concurrency=2)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(consumer.parked.wait(), 10)  # the heartbeat waits in its call
        worker.stop()
        t0 = time.monotonic()
        await asyncio.wait_for(task, 10)
        assert LosesOneHeartbeatCancel.dropped == 1
        assert time.monotonic() - t0 < 5
        assert not worker.alive
    finally:
        await queue.close()


async def test_an_attempt_past_run_timeout_fails_is_retried_then_dead_lettered(redis_url):
    metrics.reset("local")
    cfg = config(run_timeout_s=0.3, max_attempts=2)
    async with open_queue(redis_url, cfg) as q:
        job = await q.submit(GenerationParams(prompt="stuck", seed=1, steps=20))  # 20 x 0.1 s
        worker = Worker(q, SyntheticExecutor(step_s=0.1), concurrency=1)
        task = asyncio.create_task(worker.run())
        try:
            done = await wait_for(q, job.id, 20)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 15)
        dead = await q.dead_letters()
    assert done.state == "failed" and done.attempts == 2
    assert done.error == "the job ran longer than its 0.3 s limit"
    assert (worker.stats["retried"], worker.stats["failed"], worker.stats["succeeded"]) == (1, 1, 0)
    assert [d["id"] for d in dead] == [job.id]
    assert "TimeoutError" in dead[0]["detail"]  # where the attempt was when time ran out
    timed_out = metrics.value(metrics.REQUESTS, ingress="job", status="deadline_exceeded")
    assert timed_out == 2


def test_the_cli_runs_the_real_routes_unless_told_otherwise():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.executor == "tessera.routes.local:local_pipelines"
    default_bundle = str(get_settings().bundle_dir)
    assert executor_kwargs(args) == {"bundle_dir": default_bundle, "device": None}
    args = parser.parse_args(["--bundle-dir", "/b", "--device", "cpu"])
    assert executor_kwargs(args) == {"bundle_dir": "/b", "device": "cpu"}
    synthetic = ["--executor", "tessera.jobs.synthetic:SyntheticExecutor"]
    args = parser.parse_args([*synthetic, "--executor-kwargs", '{"steps": 2}'])
    assert executor_kwargs(args) == {"steps": 2}
    with pytest.raises(SystemExit, match="--bundle-dir"):
        executor_kwargs(parser.parse_args([*synthetic, "--bundle-dir", "/b"]))
