"""Crash tests: worker processes SIGKILLed at random under load, and Redis restarted with
jobs queued. Real redis-server, real worker processes, the synthetic executor."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections import Counter

import pytest

from tessera.jobs.queue import JobQueue
from tessera.jobs.redis_retry import REDIS_DOWN
from tessera.jobs.synthetic import expected_png
from tessera.routes.schemas import GenerationParams

from .conftest import config, open_queue, redis_server, spawn_worker

pytestmark = pytest.mark.slow


async def states(q: JobQueue, ids: list[str]) -> list[str]:
    pipe = q.store.redis.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(q.store.job_key(job_id), "state")
    return [(s or b"").decode() for s in await pipe.execute()]


async def pending_by_consumer(q: JobQueue) -> Counter:
    held: Counter = Counter()
    for stream in q.store.streams.values():
        info = await q.store.redis.xpending(stream, q.config.group)
        for c in info.get("consumers") or []:
            held[c["name"].decode()] += int(c["pending"])
    return held


def stop_all(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def test_200_jobs_survive_random_sigkills(tmp_path):
    n_jobs, n_workers, max_kills = 200, 3, 8
    n_waves = 4
    wave = n_jobs // n_waves
    rng = random.Random(1234)
    record = tmp_path / "runs.log"
    executor = {"steps": 5, "step_s": 0.06, "record_path": str(record)}
    cfg = config(visibility_timeout_s=1.0, max_attempts=25, block_s=0.3)
    procs: dict[str, subprocess.Popen] = {}
    kills = 0

    with redis_server() as server:

        def start(name: str) -> None:
            procs[name] = spawn_worker(
                server.url, cfg, name=name, concurrency=4, executor_kwargs=executor
            )

        for i in range(n_workers):
            start(f"w{i}")
        try:
            async with open_queue(server.url, cfg) as q:
                ids: list[str] = []
                deadline = time.monotonic() + 75
                generation = n_workers
                while True:
                    # Submit in four waves, so jobs are submitted while workers die. A wave
                    # waits for its share of the kills (or for the queue to drain), so all
                    # of them land however fast this machine runs the jobs.
                    kills_due = max_kills * (len(ids) // wave) // n_waves
                    drained = (await q.depth()).total == 0
                    if len(ids) < n_jobs and (kills >= kills_due or drained):
                        for _ in range(wave):
                            i = len(ids)
                            p = GenerationParams(prompt=f"job {i}", seed=i)
                            ids.append((await q.submit(p)).id)
                    await asyncio.sleep(rng.uniform(0.2, 0.5))
                    done = await states(q, ids)
                    if len(ids) == n_jobs and all(s == "succeeded" for s in done):
                        break
                    assert time.monotonic() < deadline, Counter(done)
                    # SIGKILL a worker that is holding jobs right now; start a new one.
                    held = await pending_by_consumer(q)
                    victims = [n for n, p in procs.items() if p.poll() is None and held[n]]
                    if kills < max_kills and victims:
                        victim = rng.choice(victims)
                        procs[victim].send_signal(signal.SIGKILL)
                        procs[victim].wait()
                        kills += 1
                        start(f"w{generation}")
                        generation += 1

                jobs = [await q.get(job_id) for job_id in ids]
                dead = await q.dead_letters()
                depth = await q.depth()
        finally:
            stop_all(procs)

    assert kills == max_kills
    assert not dead
    assert depth.total == 0
    for i, job in enumerate(jobs):
        assert job.state == "succeeded", job
        assert job.commits == 1, job  # exactly one execution committed a result
        assert job.result.images[0].png == expected_png(f"job {i}", i)
    # The kills hit running jobs: some were reclaimed and run again, yet committed once.
    reclaimed = [j for j in jobs if j.attempts > 1]
    assert reclaimed
    starts = Counter(
        ln.split("\t")[2] for ln in record.read_text().splitlines() if ln.startswith("start")
    )
    assert set(starts) == {f"job {i}" for i in range(n_jobs)}
    assert sum(starts.values()) > n_jobs  # re-executions happened
    print(f"kills={kills} reclaimed={len(reclaimed)} executions={sum(starts.values())}")


async def test_redis_restart_loses_no_queued_job(tmp_path):
    cfg = config(visibility_timeout_s=1.0, max_attempts=10, block_s=0.3)
    n_jobs = 40
    with redis_server(appendfsync="everysec") as server:
        async with open_queue(server.url, cfg) as q:
            ids = [
                (await q.submit(GenerationParams(prompt=f"r{i}", seed=i))).id for i in range(n_jobs)
            ]
        # A crash (SIGKILL) once the AOF's one-second fsync has passed: nothing is lost.
        await asyncio.sleep(1.2)
        server.restart(crash=True)
        async with open_queue(server.url, cfg) as q:
            assert await states(q, ids) == ["queued"] * n_jobs
            assert (await q.depth()).queued == n_jobs
            worker = spawn_worker(
                server.url,
                cfg,
                name="survivor",
                concurrency=4,
                executor_kwargs={"steps": 5, "step_s": 0.05},
            )
            try:
                while (await states(q, ids)).count("succeeded") < 8:
                    await asyncio.sleep(0.1)
                # A clean restart (AOF flushed) while jobs run and the worker is connected.
                server.restart()
                deadline = time.monotonic() + 40
                while True:
                    try:
                        done = await states(q, ids)
                    except REDIS_DOWN:  # the test's own connection saw the restart
                        done = []
                    if done.count("succeeded") == n_jobs:
                        break
                    assert time.monotonic() < deadline, Counter(done)
                    await asyncio.sleep(0.2)
                jobs = [await q.get(job_id) for job_id in ids]
            finally:
                stop_all({"survivor": worker})
    for i, job in enumerate(jobs):
        assert job.commits == 1 and job.result.images[0].png == expected_png(f"r{i}", i)
