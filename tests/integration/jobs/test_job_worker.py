"""The JobWorker deployment on a real Ray Serve: it pulls jobs from Redis, reports queue depth,
and the custom policy scales it from 1 to 2 replicas under a backlog.

Runs on the session's Ray (the ``stack`` fixture) as a separate application with its own
Redis and the synthetic executor. Standalone (own Ray):
``PYTHONPATH=services python -m tests.integration.jobs.test_job_worker``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import tempfile
import time

import pytest

from tessera.jobs.autoscaling import autoscaling_config
from tessera.jobs.embedded import EmbeddedRedis
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.routes.schemas import GenerationParams

pytestmark = pytest.mark.integration
APP = "jobs-worker-test"


def replicas_running(app: str) -> int:
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or "JobWorker" not in status.deployments:
        return 0
    return status.deployments["JobWorker"].replica_states.get("RUNNING", 0)


async def _load(url: str, cfg: QueueConfig, n_jobs: int) -> dict:
    q = JobQueue.from_url(url, cfg)
    try:
        ids = [
            (await q.submit(GenerationParams(prompt=f"serve {i}", seed=i))).id
            for i in range(n_jobs)
        ]
        peak, deadline = 0, time.monotonic() + 120
        while True:
            peak = max(peak, replicas_running(APP))
            jobs = [await q.get(i, with_result=False) for i in ids]
            if all(j.terminal for j in jobs):
                break
            assert time.monotonic() < deadline, [j.state for j in jobs]
            await asyncio.sleep(0.25)
        depth = await q.depth()
    finally:
        await q.close()
    return {"states": [j.state for j in jobs], "peak_replicas": peak, "depth": depth}


def exercise(n_jobs: int = 24) -> dict:
    """Deploy JobWorker (1..2 replicas, 2 slots each), queue n_jobs x 0.8 s, watch it scale."""
    from ray import serve

    from tessera.jobs.deployment import JobWorker

    directory = tempfile.mkdtemp(prefix="tji-")
    server = EmbeddedRedis(directory)
    server.start()
    cfg = QueueConfig(prefix="serve-test", visibility_timeout_s=3.0, block_s=0.5)
    scaling = autoscaling_config(
        min_replicas=1, max_replicas=2, upscale_delay_s=0.5, downscale_delay_s=2.0
    )
    scaling.update(metrics_interval_s=0.5, look_back_period_s=1.0)
    app = JobWorker.options(
        autoscaling_config=scaling,
        ray_actor_options={"num_cpus": 0},
        user_config={"concurrency": 2},
    ).bind(
        server.url,
        executor="tessera.jobs.synthetic:SyntheticExecutor",
        executor_kwargs={"steps": 8, "step_s": 0.1},
        queue_config=dataclasses.asdict(cfg),
    )
    try:
        serve.run(app, name=APP, route_prefix=None)
        return asyncio.run(_load(server.url, cfg, n_jobs))
    finally:
        serve.delete(APP)
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


def test_job_worker_runs_jobs_and_scales_on_queue_depth(stack):
    result = exercise()
    assert result["states"] == ["succeeded"] * len(result["states"])
    assert result["peak_replicas"] == 2
    assert result["depth"].total == 0


if __name__ == "__main__":
    import os

    import ray
    from ray import serve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=tempfile.mkdtemp(prefix="ray-jobs-"),
    )
    serve.start()
    t0 = time.perf_counter()
    out = exercise()
    print({**out, "states": sorted(set(out["states"])), "elapsed_s": time.perf_counter() - t0})
    serve.shutdown()
    ray.shutdown()
