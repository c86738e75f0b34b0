"""Ray Serve autoscaling on job-queue depth (a custom policy, Ray Serve >= 2.51).

Each ``JobWorker`` replica reports, through ``record_autoscaling_stats``, the queue's global
backlog (queued + running jobs: every replica sees the same number) and its own concurrency.
The controller calls ``queue_depth_policy`` with those metrics (averaged over
``look_back_period_s``) and asks for ``ceil(backlog / slots_per_replica)`` replicas within
``min_replicas``/``max_replicas``; Serve's wrapper then applies the up/downscale delays and
factors.

With zero replicas nothing reports, so keep ``min_replicas >= 1``. This module is pickled by
value into the Serve controller: it must not import anything heavy (no Redis, no torch).
"""

from __future__ import annotations

import math
from typing import Any

BACKLOG_METRIC = "jobs_backlog"
SLOTS_METRIC = "jobs_slots"
POLICY_PATH = "tessera.jobs.autoscaling:queue_depth_policy"


def desired_replicas(backlog: float, slots_per_replica: float) -> int:
    """Replicas needed so every unfinished job has a slot (at least one replica)."""
    return max(1, math.ceil(backlog / max(slots_per_replica, 1.0)))


def queue_depth_policy(ctx: Any) -> tuple[int | float, dict[str, Any]]:
    """``AutoscalingPolicy.policy_function``: (desired replicas, policy state)."""
    metrics = ctx.aggregated_metrics or {}
    backlog = metrics.get(BACKLOG_METRIC) or {}
    slots = metrics.get(SLOTS_METRIC) or {}
    if not backlog:  # replicas have not reported yet: hold steady
        return ctx.target_num_replicas, {}
    depth = max(backlog.values())
    per_replica = sum(slots.values()) / len(slots) if slots else 1.0
    desired = desired_replicas(depth, per_replica)
    # Serve clips to the bounds after the policy too; clipping here keeps the policy state
    # (and the delay counters Serve keeps on it) honest.
    low = getattr(ctx, "capacity_adjusted_min_replicas", 1)
    high = getattr(ctx, "capacity_adjusted_max_replicas", desired)
    return max(low, min(high, desired)), {"jobs_backlog": depth}


def autoscaling_config(
    *,
    min_replicas: int = 1,
    max_replicas: int = 4,
    upscale_delay_s: float = 4.0,
    downscale_delay_s: float = 60.0,
) -> dict[str, Any]:
    """A Serve ``autoscaling_config`` dict (code default or YAML) using the policy."""
    return {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "metrics_interval_s": 2.0,
        "look_back_period_s": 6.0,
        "upscale_delay_s": upscale_delay_s,
        "downscale_delay_s": downscale_delay_s,
        "policy": {"policy_function": POLICY_PATH},
    }
