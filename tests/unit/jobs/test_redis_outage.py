"""The embedded Redis SIGKILLed under load for longer than the visibility timeout: its
supervisor brings it back by itself, submissions meanwhile get 503 with Retry-After, nothing
acknowledged is lost, and no job runs twice (owners keep their jobs across the outage).
Real redis-server under a real ``RedisSupervisor``, in-process workers, the synthetic
executor, submissions through the HTTP jobs API."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
from fastapi import FastAPI

from tessera.jobs.api import build_jobs_router
from tessera.jobs.embedded import EmbeddedRedis
from tessera.jobs.queue import JobQueue
from tessera.jobs.redis_retry import retrying
from tessera.jobs.supervisor import RedisSupervisor
from tessera.jobs.synthetic import SyntheticExecutor, expected_png
from tessera.jobs.worker import Worker
from tessera.routes.schemas import GenerationParams

from .conftest import config, open_queue

VT_S = 3.0  # the visibility timeout (workers heartbeat every VT_S / 3)
OUTAGE_S = 3.5  # the supervisor's restart delay: the outage is longer than VT_S


@contextlib.contextmanager
def supervised(restart_delay_s: float) -> Iterator[RedisSupervisor]:
    directory = tempfile.mkdtemp(prefix="tj-")
    server = EmbeddedRedis(directory, tie_to_parent=True)
    supervisor = RedisSupervisor(server, poll_s=0.1, restart_delay_s=restart_delay_s)
    supervisor.start()
    try:
        yield supervisor
    finally:
        supervisor.stop()
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def crash(supervisor: RedisSupervisor) -> None:
    pid = supervisor.server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)


async def until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, every_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every_s)


async def test_an_owner_keeps_its_job_across_an_outage_longer_than_the_visibility_timeout():
    """The rule itself, step by step: after a restart nothing is reclaimed until the server
    has been up for the visibility timeout, so an owner that is alive renews first; an owner
    that stays silent still loses its job after that."""
    cfg = config(visibility_timeout_s=2.0)
    with supervised(restart_delay_s=2.5) as supervisor:
        async with open_queue(supervisor.url, cfg) as q:
            job = await q.submit(GenerationParams(prompt="kept", seed=1))
            [d] = await q.consumer.read("owner", block=False)
            assert (await q.consumer.start(d, "owner", "lease-1")).run
            crash(supervisor)

            async def restarted() -> bool:
                return supervisor.restarts == 1

            await until(restarted, 15, "the restart")
            # The pending entry's idle time now includes the outage (> the timeout) ...
            [entry] = await retrying(
                lambda: q.store.redis.xpending_range(d.stream, cfg.group, "-", "+", 1)
            )
            assert entry["time_since_delivered"] > 1000 * cfg.visibility_timeout_s
            # ... yet no other worker may take it before the owner had time to renew.
            assert await q.consumer.reclaim("thief", {}) == []
            assert await q.consumer.heartbeat("owner", [d], 1) == ["owner"]

            async def grace_over() -> bool:  # heartbeating meanwhile, as a live owner does
                assert await q.consumer.heartbeat("owner", [d], 1) == ["owner"]
                info = await q.store.redis.info("server")
                return info["uptime_in_seconds"] > cfg.visibility_timeout_s

            await until(grace_over, 10, "the server's first timeout", every_s=0.3)
            assert await q.consumer.heartbeat("owner", [d], 1) == ["owner"]
            assert await q.consumer.reclaim("thief", {}) == []
            # An owner that stays silent for the timeout (it died) loses the job, as before.
            await asyncio.sleep(cfg.visibility_timeout_s + 0.2)
            [taken] = await q.consumer.reclaim("thief", {})
            assert taken.job_id == job.id
            assert await q.consumer.heartbeat("owner", [d], 1) == ["thief"]
            # A retried start under the same lease is the same attempt, not a second one.
            assert (await q.consumer.start(taken, "thief", "lease-2")).attempts == 2
            assert (await q.consumer.start(taken, "thief", "lease-2")).attempts == 2
            assert (await q.get(job.id)).attempts == 2


async def test_redis_sigkilled_longer_than_the_visibility_timeout_under_load(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="tessera.jobs")
    record = tmp_path / "runs.log"
    cfg = config(visibility_timeout_s=VT_S, block_s=0.3, max_attempts=3)
    acked: dict[str, str] = {}  # job id -> prompt, for every 202
    refused: list[str | None] = []  # Retry-After of every 503

    def params(i: int) -> dict:
        # Even jobs run 5.6 s: started before the crash, still running after the restart
        # (their owners must renew in time); odd ones 2 s: they end during the outage and
        # commit once Redis is back.
        return {"prompt": f"job {i}", "seed": i, "steps": 14 if i % 2 == 0 else 5}

    with supervised(restart_delay_s=OUTAGE_S) as supervisor:
        gateway = JobQueue.from_url(supervisor.url, cfg)
        app = FastAPI()
        app.include_router(build_jobs_router(lambda: gateway))
        transport = httpx.ASGITransport(app=app)
        # 4 workers of 3 slots: 8 slots are idle when Redis comes back and race to reclaim
        # (each retries every 1-2 s); the owners' heartbeats come within VT_S / 3.
        queues = [JobQueue.from_url(supervisor.url, cfg) for _ in range(4)]
        workers = [
            Worker(q, SyntheticExecutor(step_s=0.4, record_path=str(record)), concurrency=3)
            for q in queues
        ]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:

                async def submit(i: int) -> bool:
                    r = await http.post("/v1/jobs", json=params(i))
                    if r.status_code == 503:
                        refused.append(r.headers.get("retry-after"))
                        return False
                    assert r.status_code == 202, r.text
                    acked[r.json()["id"]] = params(i)["prompt"]
                    return True

                for i in range(4):
                    assert await submit(i)

                async def all_running() -> bool:  # the long ones mid-run, all started
                    jobs = [await gateway.get(j, with_result=False) for j in acked]
                    long = [j for j in jobs if j.request.steps == 14]
                    return all(j.state == "running" and j.step >= 1 for j in long) and all(
                        j.started_at is not None for j in jobs
                    )

                await until(all_running, 20, "the first jobs to run")
                killed_at = time.time()
                crash(supervisor)
                # Submissions during the outage are refused with Retry-After; the first one
                # accepted again marks the end of the outage.
                i = 4
                while not await submit(i):
                    await asyncio.sleep(0.2)
                back_at = time.time()
                for i in range(5, 8):
                    assert await submit(i)

                async def all_done() -> bool:
                    jobs = [await gateway.get(j, with_result=False) for j in acked]
                    return all(j.terminal for j in jobs)

                await until(all_done, 45, "every job to end", every_s=0.2)
                jobs = {j: await gateway.get(j) for j in acked}
        finally:
            for w in workers:
                w.stop()
            await asyncio.wait_for(asyncio.gather(*tasks), 15)
            for q in [gateway, *queues]:
                await q.close()
        redis_back_by_itself = supervisor.restarts

    outage_s = back_at - killed_at
    print(f"outage {outage_s:.1f} s, {len(refused)} submissions refused, {len(acked)} accepted")
    assert redis_back_by_itself == 1
    assert outage_s > VT_S  # the outage really outlasted the visibility timeout
    assert refused and set(refused) == {"1"}  # 503 with Retry-After while Redis was down
    # Nothing acknowledged was lost, and every job ran exactly once, in its first attempt.
    assert len(acked) == 8
    for job_id, job in jobs.items():
        i = int(acked[job_id].split()[1])
        assert job.state == "succeeded", job
        assert (job.attempts, job.commits) == (1, 1), job
        assert job.result is not None and job.result.images[0].png == expected_png(f"job {i}", i)
    starts = Counter(
        ln.split("\t")[2] for ln in Path(record).read_text().splitlines() if ln.startswith("start")
    )
    assert starts == Counter(acked.values()), starts  # one executor start per job
    # Jobs were running when Redis died and ended after: their owners kept them.
    spanned = [j for j in jobs.values() if j.started_at < killed_at < j.finished_at]
    assert len(spanned) >= 2
    assert not any(w.stats["lost"] for w in workers)
    assert "was reclaimed by worker" not in caplog.text
