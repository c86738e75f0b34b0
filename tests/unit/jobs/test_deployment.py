"""JobWorker's replica logic (run on this event loop, no Ray cluster) and the autoscaling
policy, evaluated the way Serve's controller loads and wraps it."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from ray.serve._private.common import DeploymentID
from ray.serve.autoscaling_policy import _apply_autoscaling_config
from ray.serve.config import AutoscalingConfig, AutoscalingContext

from tessera.jobs.autoscaling import (
    BACKLOG_METRIC,
    SLOTS_METRIC,
    autoscaling_config,
    desired_replicas,
    queue_depth_policy,
)
from tessera.jobs.deployment import JobWorker
from tessera.jobs.queue import wait_for
from tessera.routes.schemas import GenerationParams

from .conftest import config, open_queue

ReplicaClass = JobWorker.func_or_class


def make_replica(redis_url, cfg, **kw):
    return ReplicaClass(
        redis_url,
        executor="tessera.jobs.synthetic:SyntheticExecutor",
        executor_kwargs={"step_s": 0.01},
        queue_config=dataclasses.asdict(cfg),
        **kw,
    )


async def test_replica_runs_jobs_reconfigures_and_reports_depth(redis_url):
    cfg = config()
    replica = make_replica(redis_url, cfg, concurrency=1)
    try:
        await replica.reconfigure({"concurrency": 3})
        await replica.check_health()
        async with open_queue(redis_url, cfg) as q:
            ids = [(await q.submit(GenerationParams(prompt=f"d{i}"))).id for i in range(6)]
            stats = await replica.record_autoscaling_stats()
            assert stats[SLOTS_METRIC] == 3 and 0 <= stats[BACKLOG_METRIC] <= 6
            for job_id in ids:
                assert (await wait_for(q, job_id, 10)).state == "succeeded"
            assert (await replica.record_autoscaling_stats())[BACKLOG_METRIC] == 0
            info = await replica.stats()
            assert info["alive"] and info["concurrency"] == 3
            assert info["counters"]["succeeded"] == 6
            assert (await q.depth()).slots == 3
        await replica.check_health()
    finally:
        await replica.__del__()  # what Serve awaits on graceful shutdown
    assert replica.__del__() is None  # a second call (the garbage collector's) is a no-op


async def test_health_check_fails_when_the_loop_died(redis_url):
    replica = make_replica(redis_url, config())
    replica._executor_spec = "tessera.jobs.synthetic:NoSuchExecutor"
    replica._task.cancel()
    replica._task = None
    replica._ensure_started()
    await asyncio.sleep(0.05)
    with pytest.raises(RuntimeError, match="exited"):
        await replica.check_health()
    await replica.shutdown()


def test_constructor_needs_handles_or_an_executor():
    with pytest.raises(ValueError):
        ReplicaClass("redis://localhost:1")
    with pytest.raises(ValueError):
        ReplicaClass(  # no bundle_dir
            "redis://localhost:1", lm="lm", prior="prior", decoder="decoder", detokenizer="detok"
        )


def context(backlog: float, slots: float, replicas: int, **config_overrides):
    cfg = AutoscalingConfig(**{**autoscaling_config(), **config_overrides})
    ids = [f"r{i}" for i in range(replicas)]
    return AutoscalingContext(
        deployment_id=DeploymentID(name="JobWorker", app_name="tessera"),
        deployment_name="JobWorker",
        app_name="tessera",
        current_num_replicas=replicas,
        target_num_replicas=replicas,
        running_replicas=ids,
        total_num_requests=0.0,
        total_queued_requests=0.0,
        aggregated_metrics={
            BACKLOG_METRIC: dict.fromkeys(ids, backlog),
            SLOTS_METRIC: dict.fromkeys(ids, slots),
        },
        raw_metrics=None,
        capacity_adjusted_min_replicas=cfg.min_replicas,
        capacity_adjusted_max_replicas=cfg.max_replicas,
        policy_state={},
        last_scale_up_time=None,
        last_scale_down_time=None,
        current_time=None,
        config=cfg,
    )


def test_policy_scales_with_queue_depth():
    assert desired_replicas(0, 2) == 1
    assert desired_replicas(5, 2) == 3
    assert queue_depth_policy(context(backlog=7, slots=2, replicas=1))[0] == 4
    assert queue_depth_policy(context(backlog=1, slots=2, replicas=3))[0] == 1
    # No reports yet: keep the current target.
    ctx = context(backlog=0, slots=2, replicas=2)
    ctx._aggregated_metrics_value = {}
    assert queue_depth_policy(ctx)[0] == 2


def test_policy_loads_like_the_controller_and_respects_bounds():
    cfg = AutoscalingConfig(**autoscaling_config(max_replicas=4, upscale_delay_s=0))
    policy = cfg.policy.get_policy()  # what the controller does: cloudpickled by value
    wrapped = _apply_autoscaling_config(policy)
    replicas, _ = wrapped(context(backlog=100, slots=2, replicas=1, upscale_delay_s=0))
    assert replicas == 4
