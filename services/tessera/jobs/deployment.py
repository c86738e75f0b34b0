"""``JobWorker``: the Ray Serve deployment running the job worker loop in each replica.

Wiring (in ``tessera.app.build_app``): ``JobWorker.bind(redis_url, bundle_dir=...,
**model_handles)``, one handle per registered model service, by registry name.

Each replica then builds the routes over those handles (``tessera.routes.pipelines``,
imported there, not here) and runs ``Pipelines.generate`` on queued jobs, exactly as the
gateway does for a synchronous call. Any other executor: ``JobWorker.bind(redis_url,
executor="pkg.mod:attr", executor_kwargs={...})`` (see ``tessera.jobs.executors.build_executor``;
the tests use ``tessera.jobs.synthetic:SyntheticExecutor``). Nothing calls the deployment: it
pulls work from Redis; it must still be part of the application graph (bind it and pass it
to the ingress, or deploy it as its own application). ``user_config: {concurrency: N}`` sets
its slots live; ``check_health`` fails if the loop died (Serve then replaces the replica; its
jobs are reclaimed after the visibility timeout). Replicas scale on queue depth with
``tessera.jobs.autoscaling``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from tessera.common import metrics
from tessera.jobs.autoscaling import BACKLOG_METRIC, SLOTS_METRIC, autoscaling_config
from tessera.jobs.executors import build_executor
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.jobs.worker import Worker
from tessera.routes.handles import ModelHandles

log = logging.getLogger(__name__)


@serve.deployment(
    name="JobWorker",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=8,
    health_check_period_s=5.0,
    health_check_timeout_s=10.0,
    graceful_shutdown_timeout_s=10.0,
    autoscaling_config=autoscaling_config(),
    user_config={"concurrency": 2},
)
class JobWorker:
    def __init__(
        self,
        redis_url: str,
        *,
        bundle_dir: str | None = None,
        executor: str | None = None,
        executor_kwargs: dict[str, Any] | None = None,
        queue_config: dict[str, Any] | None = None,
        concurrency: int = 2,
        ar_candidates: int | None = None,  # the Serve config's args.ar_candidates
        peers: dict[str, dict[str, Any]] | None = None,  # extra bundles (routes/served.py)
        **handles: Any,  # one per registered model service, by registry name
    ) -> None:
        if executor is None and (bundle_dir is None or not handles):
            raise ValueError(
                "JobWorker needs the model handles and bundle_dir, or an executor spec"
            )
        self._handles = ModelHandles(**handles)  # unknown service names fail here
        self._ar_candidates = ar_candidates
        self._peers = peers
        self._bundle_dir = bundle_dir
        self._executor_spec = executor
        self._executor_kwargs = dict(executor_kwargs or {})
        self.queue = JobQueue.from_url(redis_url, QueueConfig.from_dict(queue_config))
        self.concurrency = concurrency
        self.worker: Worker | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._ensure_started()  # Serve runs __init__ on the replica's event loop

    def _ensure_started(self) -> None:
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # started by reconfigure / the first health check instead
            self._task = loop.create_task(self._run(), name="job-worker")

    async def _run(self) -> None:
        if self._executor_spec is None:
            from tessera.routes.bundle import BundleInfo
            from tessera.routes.edit_requests import job_executor
            from tessera.routes.pipelines import Pipelines
            from tessera.routes.served import ServedModels

            pipelines = ServedModels(
                Pipelines(self._handles, BundleInfo.read(self._bundle_dir), self._ar_candidates),
                self._peers,
                self._ar_candidates,
            )
            executor = job_executor(pipelines)  # generations and edits
        else:
            executor = await build_executor(self._executor_spec, **self._executor_kwargs)
        self.worker = Worker(self.queue, executor, concurrency=self.concurrency)
        await self.worker.run()

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        concurrency = int(user_config.get("concurrency", self.concurrency))
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.concurrency = concurrency
        if self.worker is not None:
            self.worker.set_concurrency(concurrency)
        self._ensure_started()

    async def check_health(self) -> None:
        self._ensure_started()
        if self._task is None:
            raise RuntimeError("job worker loop not started")
        if self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"job worker loop exited: {error!r}")
        if self.worker is not None and not self.worker.alive:
            raise RuntimeError("a job worker task died")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        depth = await self.queue.depth()
        # Serve polls this every metrics_interval_s: a good cadence to refresh the gauge.
        for priority in ("high", "normal"):
            metrics.set_queue_depth(priority, depth.by_priority.get(priority, 0))
        return {BACKLOG_METRIC: float(depth.total), SLOTS_METRIC: float(self.concurrency)}

    async def stats(self) -> dict[str, Any]:
        """This replica's counters and the queue depth (for debugging through a handle)."""
        depth = await self.queue.depth()
        return {
            "name": self.worker.name if self.worker else None,
            "concurrency": self.concurrency,
            "alive": bool(self.worker and self.worker.alive),
            "counters": dict(self.worker.stats) if self.worker else {},
            "queued": depth.queued,
            "running": depth.running,
        }

    async def shutdown(self) -> None:
        """Stop taking jobs and hand running ones back to the queue (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self.worker.stop()
        if self._task is not None:
            if self.worker is None:
                self._task.cancel()
            try:
                await asyncio.wait_for(self._task, timeout=5.0)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass
        await self.queue.close()

    def __del__(self) -> Any:
        # Serve calls __del__ on graceful shutdown, on the replica's loop, and awaits a
        # coroutine it returns. The garbage collector's call (no loop, or already shut
        # down) must not create a coroutine nobody awaits.
        if getattr(self, "_closed", True):
            return None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self.shutdown()
