"""A durable job queue on Redis Streams. ``JobQueue`` is the client side (submit, get, cancel,
watch, depth), here; ``JobQueue.consumer`` is a ``QueueConsumer`` (``consumer.py``) with the
primitives workers use (read, reclaim, start, progress, commit, fail, heartbeat); both hold
one ``QueueStore`` (``store.py``: the Redis client, keys and Lua scripts). Its value types
(config, job record, updates, depth) live in ``records.py``; what to do when Redis is down,
in ``redis_retry.py``.

Why Redis Streams with consumer groups (and not Ray Serve's ``@task_consumer`` over Celery):
a consumer group gives at-least-once delivery with explicit XACK, a pending-entries list per
consumer and XAUTOCLAIM to take over the messages of a dead worker after a visibility
timeout; Lua scripts make every state transition atomic, which is what lets results be
first-writer-wins and cancellation exact. Celery (what Ray's task processor wraps) offers
revoke-by-id but no cooperative per-step cancel, no progress stream, no bounded queue with a
Retry-After, and no idempotent result commit, and it adds a dependency. See
docs/decisions/jobs-queue.md.

Redis layout (prefix ``P``, default ``tessera:jobs``):
- ``P:q:high``, ``P:q:normal``: streams of ``{job: id}`` messages, consumer group ``workers``;
  workers read high before normal. XLEN of both = unfinished jobs (bounded by ``max_depth``).
- ``P:job:<id>``: hash with state, priority, attempts, timestamps, request JSON, progress,
  error, the live message (stream, msg), the lease of the worker running it, commits.
- ``P:result:<id>``: the serialized ``GenerateResponse`` (PNGs), with a TTL
  (``result_ttl_s``); the job's ``result_expires_at`` says when it goes.
- ``P:events:<id>``: a per-job stream of progress/state events (watchers resume by id).
- ``P:idem:<sha256(key)>``: ``"<job id>|<request hash>"``, TTL ``idempotency_ttl_s``.
- ``P:dead``: dead-letter list (JSON: id, error, detail, attempts, at).
- ``P:stats`` (service-time EWMA), ``P:workers`` (zset of heartbeats), ``P:slots``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Self

from tessera.common.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tessera.jobs.consumer import QueueConsumer
from tessera.jobs.records import (  # noqa: F401 - re-exported: callers import them from here
    JOB_ID,
    MAX_IDEMPOTENCY_KEY,
    PRIORITIES,
    TERMINAL,
    Delivery,
    JobRecord,
    JobUpdate,
    Priority,
    QueueConfig,
    QueueDepth,
    StartResult,
    _s,
)
from tessera.jobs.store import QueueStore
from tessera.routes.edit_requests import JobRequest
from tessera.v1 import common_pb2, generation_pb2


class JobQueue:
    """The queue's client API over a ``QueueStore``; ``consumer`` is its worker side (the
    primitives ``tessera.jobs.worker.Worker`` drives), over the same store."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store
        self.consumer = QueueConsumer(store)

    @classmethod
    def from_url(cls, url: str, config: QueueConfig | None = None) -> Self:
        """A queue with its own Redis client (``QueueStore.from_url``)."""
        return cls(QueueStore.from_url(url, config))

    @property
    def config(self) -> QueueConfig:
        return self.store.config

    async def close(self) -> None:
        await self.store.close()

    async def submit(
        self,
        params: JobRequest,
        *,
        priority: str = "normal",
        idempotency_key: str | None = None,
    ) -> JobRecord:
        """Enqueue a job; the same idempotency key (and request) returns the first job."""
        if priority not in PRIORITIES:
            raise InvalidArgument("priority must be 'normal' or 'high'")
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
                raise InvalidArgument(
                    f"idempotency key must be 1..{MAX_IDEMPOTENCY_KEY} characters"
                )
            if not idempotency_key.isprintable():
                raise InvalidArgument("idempotency key must be printable characters")
        await self.store.ensure_setup()
        request = params.model_dump_json(exclude_none=True)
        request_hash = hashlib.sha256(f"{priority}\n{request}".encode()).hexdigest()
        job_id = uuid.uuid4().hex
        stream = self.store.streams[priority]
        reply = await self.store.scripts["submit"](
            keys=[
                self.store.job_key(job_id),
                stream,
                self.store.streams["high"],
                self.store.streams["normal"],
                self.store.idem_key(idempotency_key or ""),
            ],
            args=[
                job_id,
                request,
                request_hash,
                priority,
                repr(time.time()),
                self.config.max_depth,
                self.config.idempotency_ttl_s,
                self.config.record_ttl_s,
                idempotency_key or "",
                f"{self.config.prefix}:job:",
            ],
        )
        status, value = _s(reply[0]), _s(reply[1])
        if status == "full":
            raise ResourceExhausted(
                f"the job queue is full ({value} unfinished jobs); retry later",
                retry_after_s=await self._retry_after(int(value)),
            )
        if status == "conflict":
            raise AlreadyExists(
                f"idempotency key already used for job {value} with a different request"
            )
        return await self.get(value, with_result=False)

    async def _retry_after(self, depth: int) -> float:
        """Seconds until one job leaves a full queue at the measured rate (1..60)."""
        service = await self.store.redis.hget(self.store.stats_key, "service_s")
        service_s = float(service) if service else 1.0
        slots = max(1, (await self.depth()).slots)
        excess = max(1, depth - self.config.max_depth + 1)
        return float(min(60, max(1, math.ceil(excess * service_s / slots))))

    async def get(self, job_id: str, *, with_result: bool = True) -> JobRecord:
        if not JOB_ID.match(job_id or ""):
            raise NotFound(f"job {job_id!r} not found")
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.hgetall(self.store.job_key(job_id))
        if with_result:
            pipe.get(self.store.result_key(job_id))
        replies = await pipe.execute()
        if not replies[0]:
            raise NotFound(f"job {job_id} not found")
        job = JobRecord.from_hash(replies[0])
        if with_result and job.state == "succeeded" and replies[1] is not None:
            job.result = generation_pb2.GenerateResponse.FromString(replies[1])
        return job

    async def result_bytes(self, job_id: str) -> bytes | None:
        return await self.store.redis.get(self.store.result_key(job_id))

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel: a queued job never runs; a running one stops at its next progress step."""
        if not JOB_ID.match(job_id or ""):
            raise NotFound(f"job {job_id!r} not found")
        reply = await self.store.scripts["cancel"](
            keys=self.store.job_keys(job_id),
            args=[
                self.config.group,
                repr(time.time()),
                self.config.record_ttl_s,
                self.config.events_maxlen,
            ],
        )
        if _s(reply[0]) == "notfound":
            raise NotFound(f"job {job_id} not found")
        return await self.get(job_id)

    async def watch(
        self, job_id: str, *, last_event_id: str | None = None, keepalive: bool = False
    ) -> AsyncIterator[JobUpdate]:
        """Progress of a job until it ends. Without ``last_event_id`` the first item is a
        snapshot of the job now; with it, events after that id are replayed (SSE resume).
        The last item has ``final=True`` and carries the job with its result. With
        ``keepalive``, a quiet ``block_s`` yields an update flagged ``keepalive``."""
        events = self.store.events_key(job_id)
        if last_event_id:
            if not re.match(r"^\d{1,20}-\d{1,20}$", last_event_id):
                raise InvalidArgument("Last-Event-ID must look like '1700000000000-0'")
            cursor = last_event_id
            job = await self.get(job_id, with_result=False)
        else:
            # Read the newest event id *before* the job, so no later event can be missed.
            newest = await self.store.redis.xrevrange(events, count=1)
            cursor = _s(newest[0][0]) if newest else "0-0"
            job = await self.get(job_id, with_result=False)
            if not job.terminal:
                yield JobUpdate(event_id=cursor, job=dataclasses.replace(job))
        if job.terminal and not last_event_id:
            yield JobUpdate(event_id=cursor, job=await self.get(job_id), final=True)
            return
        # (Resuming a finished job replays the events after the cursor, up to its end event.)
        block_ms = int(self.config.block_s * 1000)
        while True:
            reply = await self.store.redis.xread({events: cursor}, count=64, block=block_ms)
            if not reply:
                # Quiet for block_s: make sure the job did not end unseen (e.g. it expired).
                job = await self.get(job_id)
                if job.terminal:
                    yield JobUpdate(event_id=cursor, job=job, final=True)
                    return
                if keepalive:
                    yield JobUpdate(event_id=cursor, job=job, keepalive=True)
                continue
            for entry_id, raw in reply[0][1]:
                cursor = _s(entry_id)
                fields_ = {_s(k): v for k, v in raw.items()}
                kind = _s(fields_.get("kind", b""))
                if kind == "end":
                    yield JobUpdate(event_id=cursor, job=await self.get(job_id), final=True)
                    return
                job.state = _s(fields_.get("state", job.state.encode()))
                if "attempts" in fields_:
                    job.attempts = int(fields_["attempts"])
                if fields_.get("cancel") == b"1":
                    job.cancel_requested = True
                previews: list[common_pb2.Image] = []
                if kind == "progress":
                    job.step = int(fields_["step"])
                    job.total_steps = int(fields_["total"])
                    job.stage = _s(fields_["stage"])
                    if fields_.get("ev"):
                        ev = generation_pb2.GenerateStreamResponse.FromString(fields_["ev"])
                        previews = list(ev.previews)
                yield JobUpdate(event_id=cursor, job=dataclasses.replace(job), previews=previews)

    async def depth(self) -> QueueDepth:
        await self.store.ensure_setup()
        pipe = self.store.redis.pipeline(transaction=False)
        for stream in self.store.streams.values():
            pipe.xlen(stream)
            pipe.xpending(stream, self.config.group)
        alive_since = time.time() - 3 * self.config.visibility_timeout_s
        pipe.zrangebyscore(self.store.workers_key, alive_since, "+inf")
        pipe.hgetall(self.store.slots_key)
        replies = await pipe.execute()
        by_priority: dict[str, int] = {}
        running = 0
        for i, prio in enumerate(self.store.streams):
            by_priority[prio] = int(replies[2 * i])
            pending = replies[2 * i + 1]
            running += int(pending["pending"] if isinstance(pending, dict) else pending[0])
        total = sum(by_priority.values())
        alive = {_s(w) for w in replies[-2]}
        slots = sum(int(v) for k, v in replies[-1].items() if _s(k) in alive)
        return QueueDepth(
            queued=max(0, total - running),
            running=running,
            by_priority=by_priority,
            workers=len(alive),
            slots=slots,
        )

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        raw = await self.store.redis.lrange(self.store.dead_key, 0, limit - 1)
        return [json.loads(x) for x in raw]


async def wait_for(queue: JobQueue, job_id: str, timeout_s: float = 30.0) -> JobRecord:
    """Poll until a job is terminal (tests, benchmarks and simple clients)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = await queue.get(job_id)
        if job.terminal:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.state} after {timeout_s}s")
        await asyncio.sleep(0.05)
