"""The queue and the worker loop against a real redis-server, workers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from tessera.common.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from tessera.jobs.queue import Delivery, JobQueue, wait_for
from tessera.jobs.synthetic import SyntheticExecutor, expected_png
from tessera.jobs.worker import Worker
from tessera.routes.schemas import GenerationParams

from .conftest import config, open_queue


def params(prompt: str, seed: int = 1, **kw) -> GenerationParams:
    return GenerationParams(prompt=prompt, seed=seed, **kw)


@contextlib.asynccontextmanager
async def running_worker(queue: JobQueue, *, concurrency: int = 2, **executor_kwargs):
    executor_kwargs.setdefault("step_s", 0.005)
    worker = Worker(queue, SyntheticExecutor(**executor_kwargs), concurrency=concurrency)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        # Shutdown takes well under a second (test_worker.py); the margin is for a loaded box.
        await asyncio.wait_for(task, 15)


async def reclaim_within(q: JobQueue, consumer: str, timeout_s: float) -> list[Delivery]:
    deadline = time.monotonic() + timeout_s
    while not (found := await q.consumer.reclaim(consumer, {})):
        assert time.monotonic() < deadline, "nothing to reclaim"
        await asyncio.sleep(0.05)
    return found


def lines(path: Path) -> list[list[str]]:
    return [ln.split("\t") for ln in path.read_text().splitlines()] if path.exists() else []


async def test_job_succeeds_with_result_progress_and_ttl(redis_url):
    cfg = config(result_ttl_s=600)
    async with open_queue(redis_url, cfg) as q, running_worker(q):
        job = await q.submit(params("a red circle", seed=7, n=2))
        assert job.state == "queued" and job.attempts == 0 and job.priority == "normal"
        done = await wait_for(q, job.id, 10)
        assert done.state == "succeeded" and done.attempts == 1 and done.commits == 1
        assert [i.png for i in done.result.images] == [
            expected_png("a red circle", 7, i) for i in range(2)
        ]
        assert done.step == done.total_steps == 4 and done.stage == "decoder"
        assert done.created_at <= done.started_at <= done.finished_at
        assert done.result_expires_at == pytest.approx(done.finished_at + 600, abs=1)
        assert done.to_proto().result.images[1].png == done.result.images[1].png
        depth = await q.depth()
        assert depth.total == 0 and depth.workers == 1 and depth.slots == 2


async def test_idempotency_key(redis_url):
    async with open_queue(redis_url) as q:
        first = await q.submit(params("cat"), idempotency_key="k-1")
        again = await q.submit(params("cat"), idempotency_key="k-1")
        assert again.id == first.id
        other = await q.submit(params("cat"))
        assert other.id != first.id
        with pytest.raises(AlreadyExists):
            await q.submit(params("dog"), idempotency_key="k-1")
        with pytest.raises(AlreadyExists):  # the priority is part of the request
            await q.submit(params("cat"), idempotency_key="k-1", priority="high")
        for bad in ("", "x" * 129, "tab\there"):
            with pytest.raises(InvalidArgument):
                await q.submit(params("cat"), idempotency_key=bad)
        assert (await q.depth()).queued == 2


async def test_full_queue_is_resource_exhausted_with_retry_after(redis_url):
    async with open_queue(redis_url, config(max_depth=3)) as q:
        ids = [(await q.submit(params(f"p{i}"))).id for i in range(3)]
        with pytest.raises(ResourceExhausted) as err:
            await q.submit(params("one too many"), priority="high")
        assert err.value.retry_after_s is not None and 1 <= err.value.retry_after_s <= 60
        await q.cancel(ids[0])  # a finished job frees its place
        await q.submit(params("fits again"))


async def test_unknown_and_malformed_ids_are_not_found(redis_url):
    async with open_queue(redis_url) as q:
        for job_id in ("0" * 32, "nope", "../../etc", ""):
            with pytest.raises(NotFound):
                await q.get(job_id)
            with pytest.raises(NotFound):
                await q.cancel(job_id)
        with pytest.raises(InvalidArgument):
            await q.submit(params("x"), priority="urgent")


async def test_high_priority_runs_first(redis_url, tmp_path):
    record = tmp_path / "runs.log"
    async with open_queue(redis_url) as q:
        normal = [await q.submit(params(f"normal {i}")) for i in range(3)]
        high = await q.submit(params("high"), priority="high")
        async with running_worker(q, concurrency=1, record_path=str(record)):
            for job in [*normal, high]:
                assert (await wait_for(q, job.id, 10)).state == "succeeded"
    starts = [ln[2] for ln in lines(record) if ln[0] == "start"]
    assert starts == ["high", "normal 0", "normal 1", "normal 2"]


async def test_cancel_queued_job_never_runs(redis_url, tmp_path):
    record = tmp_path / "runs.log"
    async with open_queue(redis_url) as q:
        victim = await q.submit(params("victim"))
        cancelled = await q.cancel(victim.id)
        assert cancelled.state == "cancelled" and cancelled.finished_at
        assert (await q.cancel(victim.id)).state == "cancelled"  # idempotent
        marker = await q.submit(params("marker"))
        async with running_worker(q, record_path=str(record)):
            assert (await wait_for(q, marker.id, 10)).state == "succeeded"
        final = await q.get(victim.id)
        assert final.state == "cancelled" and final.attempts == 0 and final.started_at is None
        assert [ln[2] for ln in lines(record)] == ["marker", "marker"]
        assert (await q.depth()).total == 0


async def test_cancel_running_job_stops_at_next_step(redis_url, tmp_path):
    record = tmp_path / "runs.log"
    async with open_queue(redis_url) as q, running_worker(q, record_path=str(record), step_s=0.02):
        job = await q.submit(params("long", steps=200))
        while (await q.get(job.id)).step < 2:
            await asyncio.sleep(0.02)
        requested = await q.cancel(job.id)
        assert requested.state == "running" and requested.cancel_requested
        final = await wait_for(q, job.id, 10)
        assert final.state == "cancelled" and final.commits == 0 and final.result is None
        assert final.step < 200
        stopped = [ln for ln in lines(record) if ln[0] == "cancelled"]
        assert len(stopped) == 1 and int(stopped[0][3]) <= final.step + 1


async def test_failed_attempt_is_retried_then_succeeds(redis_url):
    async with open_queue(redis_url) as q, running_worker(q):
        job = await q.submit(params("flaky:1:x"))
        done = await wait_for(q, job.id, 10)
        assert done.state == "succeeded" and done.attempts == 2 and done.commits == 1


async def test_job_runs_count_as_requests_under_ingress_job(redis_url):
    from tessera.common import metrics

    metrics.reset("local")
    async with open_queue(redis_url) as q, running_worker(q):
        job = await q.submit(params("flaky:1:y", route="unclip"))
        assert (await wait_for(q, job.id, 10)).state == "succeeded"
    assert metrics.value(metrics.REQUESTS, route="unclip", status="ok", ingress="job") == 1
    failed = metrics.value(metrics.REQUESTS, route="unclip", ingress="job") - 1
    assert failed == 1  # the flaky first attempt, counted with its error status


async def test_exhausted_attempts_go_to_dead_letter(redis_url):
    async with open_queue(redis_url, config(max_attempts=3)) as q, running_worker(q):
        bad = await q.submit(params("fail:always"))
        invalid = await q.submit(params("invalid:request"))
        failed = await wait_for(q, bad.id, 10)
        assert failed.state == "failed" and failed.attempts == 3
        assert failed.error == "internal error (RuntimeError)"
        rejected = await wait_for(q, invalid.id, 10)
        assert rejected.state == "failed" and rejected.attempts == 1  # permanent: no retry
        assert "rejects" in rejected.error
        dead = {d["id"]: d for d in await q.dead_letters()}
        assert set(dead) == {bad.id, invalid.id}
        assert dead[bad.id]["attempts"] == 3 and "synthetic failure" in dead[bad.id]["detail"]
        assert (await q.depth()).total == 0


async def test_dead_worker_is_reclaimed_and_stale_commit_loses(redis_url):
    cfg = config(visibility_timeout_s=0.5)
    async with open_queue(redis_url, cfg) as q:
        job = await q.submit(params("orphan", seed=3))
        # A worker takes the job and starts it, then dies (never acks, never heartbeats).
        [ghost] = await q.consumer.read("ghost", block=False)
        assert (await q.consumer.start(ghost, "ghost", "ghost-lease")).run
        assert (await q.get(job.id)).state == "running"
        async with running_worker(q):
            done = await wait_for(q, job.id, 10)
        assert done.state == "succeeded" and done.attempts == 2 and done.commits == 1
        # The ghost comes back: its lease is gone and its result is refused.
        from tessera.v1 import generation_pb2

        assert (
            await q.consumer.progress(
                job.id, "ghost-lease", generation_pb2.GenerateStreamResponse()
            )
            == 0
        )
        other = generation_pb2.GenerateResponse(seed=999)
        assert await q.consumer.commit(ghost, other, service_s=1.0) == "already"
        again = await q.get(job.id)
        assert again.commits == 1 and again.result.images[0].png == expected_png("orphan", 3)


async def test_job_whose_workers_keep_dying_is_dead_lettered(redis_url):
    cfg = config(visibility_timeout_s=0.2, max_attempts=2)
    async with open_queue(redis_url, cfg) as q:
        job = await q.submit(params("poison"))
        [d] = await q.consumer.read("w1", block=False)
        assert (await q.consumer.start(d, "w1", "lease-1")).run
        for name, lease in (("w2", "lease-2"), ("w3", "lease-3")):
            await asyncio.sleep(0.3)
            # Nothing is reclaimed in a server's first second (its grace after a restart).
            [d] = await reclaim_within(q, name, 3.0)
            started = await q.consumer.start(d, name, lease)
        assert not started.run and started.reason == "dead"
        final = await q.get(job.id)
        assert final.state == "failed" and final.attempts == 2 and "gave up" in final.error
        assert (await q.dead_letters())[0]["id"] == job.id
        assert (await q.depth()).total == 0


async def test_heartbeat_keeps_long_job_from_being_reclaimed(redis_url, tmp_path):
    record = tmp_path / "runs.log"
    cfg = config(visibility_timeout_s=0.5)
    async with open_queue(redis_url, cfg) as q:
        async with (
            running_worker(q, concurrency=1, step_s=0.1, record_path=str(record)),
            running_worker(q, concurrency=1, step_s=0.1, record_path=str(record)),
        ):
            job = await q.submit(params("slow", steps=15))  # 1.5 s > 3 visibility timeouts
            done = await wait_for(q, job.id, 10)
        assert done.state == "succeeded" and done.attempts == 1
        assert [ln[0] for ln in lines(record)] == ["start", "done"]


async def test_result_expires(redis_url):
    cfg = config(result_ttl_s=1, record_ttl_s=60)
    async with open_queue(redis_url, cfg) as q, running_worker(q):
        job = await q.submit(params("ephemeral"))
        done = await wait_for(q, job.id, 10)
        assert done.result is not None
        await asyncio.sleep(1.2)
        later = await q.get(job.id)
        assert later.state == "succeeded" and later.result is None and later.result_expired
        assert later.result_expires_at < time.time()


async def test_watch_streams_progress_then_result_and_resumes(redis_url):
    async with open_queue(redis_url) as q:
        job = await q.submit(params("watched", steps=3))
        updates = []
        watching = asyncio.Event()

        async def watch():
            async for u in q.watch(job.id):
                updates.append(u)
                watching.set()

        watcher = asyncio.create_task(watch())
        await asyncio.wait_for(watching.wait(), 10)  # the snapshot: the watch has its cursor
        async with running_worker(q, step_s=0.02):
            await asyncio.wait_for(watcher, 10)
        assert updates[0].job.state == "queued" and not updates[0].previews
        progress = [u for u in updates if u.previews]
        assert [u.job.step for u in progress] == [1, 2, 3]
        assert all(u.job.total_steps == 3 for u in progress)
        assert progress[0].previews[0].png.startswith(b"\x89PNG")
        final = updates[-1]
        assert final.final and final.job.state == "succeeded" and final.job.result.images
        assert sum(u.final for u in updates) == 1
        # Resume after the first progress event: the rest is replayed.
        replay = [u async for u in q.watch(job.id, last_event_id=progress[0].event_id)]
        assert [u.job.step for u in replay if u.previews] == [2, 3] and replay[-1].final
        # A finished job: one final update at once.
        late = [u async for u in q.watch(job.id)]
        assert len(late) == 1 and late[0].final
        with pytest.raises(NotFound):
            [u async for u in q.watch("f" * 32)]
