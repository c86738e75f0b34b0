"""The worker side of the job queue: take messages, start, report, commit or fail them.

Every state change is one Lua script (``lua.py``), so a worker that dies between two calls
leaves the job in a state another worker can reclaim. ``tessera.jobs.worker`` is the loop
that drives these; it reaches them as ``JobQueue.consumer`` (``queue.py``).
"""

from __future__ import annotations

import time
from typing import Any

from redis.exceptions import ResponseError

from tessera.jobs import lua
from tessera.jobs.records import Delivery, QueueConfig, StartResult, _s
from tessera.jobs.store import QueueStore
from tessera.v1 import generation_pb2


class QueueConsumer:
    """The primitives a worker calls, in the order a job meets them, over a shared store."""

    def __init__(self, store: QueueStore) -> None:
        self.store = store

    @property
    def config(self) -> QueueConfig:
        return self.store.config

    async def read(self, consumer: str, *, block: bool) -> list[Delivery]:
        """New messages for ``consumer``: high priority first; with ``block``, wait up to
        ``block_s`` on both streams (then at most one message per stream is returned)."""
        await self.store.ensure_setup()
        streams = list(self.store.streams.values())
        if not block:
            for stream in streams:
                got = await self._xreadgroup(consumer, [stream], block_ms=None)
                if got:
                    return got
            return []
        return await self._xreadgroup(consumer, streams, block_ms=int(self.config.block_s * 1000))

    async def _xreadgroup(
        self, consumer: str, streams: list[str], *, block_ms: int | None
    ) -> list[Delivery]:
        try:
            reply = await self.store.redis.xreadgroup(
                self.config.group, consumer, {s: ">" for s in streams}, count=1, block=block_ms
            )
        except ResponseError as e:
            if "NOGROUP" in str(e):  # Redis lost its data (no persistence): recreate
                await self.store.lost_data()
                return []
            raise
        out = []
        items = reply.items() if isinstance(reply, dict) else (reply or [])
        for stream, entries in items:
            if isinstance(entries, list) and entries and isinstance(entries[0], list):
                entries = entries[0]  # RESP3 shape
            for msg_id, raw in entries:
                job = raw.get(b"job") if raw else None
                if job is not None:
                    out.append(Delivery(_s(stream), _s(msg_id), _s(job)))
        # Deliver high priority first when one blocking read returned both.
        order = {s: i for i, s in enumerate(self.store.streams.values())}
        return sorted(out, key=lambda d: order.get(d.stream, 99))

    async def reclaim(
        self, consumer: str, cursors: dict[str, str], *, count: int = 1
    ) -> list[Delivery]:
        """Take over messages idle longer than the visibility timeout (their worker died),
        counting idle time only while the server has been up (see ``lua.RECLAIM``).
        ``cursors`` (per stream) is advanced in place across calls."""
        await self.store.ensure_setup()
        min_idle_ms = int(self.config.visibility_timeout_s * 1000)
        for stream in self.store.streams.values():
            for _ in range(50):  # XAUTOCLAIM scans a bounded slice of the PEL per call
                cursor = cursors.get(stream, "0-0")
                reply = await self.store.scripts["reclaim"](
                    keys=[stream], args=[self.config.group, consumer, min_idle_ms, cursor, count]
                )
                cursors[stream] = _s(reply[0])
                found = [
                    Delivery(stream, _s(reply[i]), _s(reply[i + 1]))
                    for i in range(1, len(reply), 2)
                ]
                if found:
                    return found
                if cursors[stream] == "0-0":
                    break
        return []

    def _attempt_keys(self, d: Delivery) -> list[str]:
        """KEYS of the scripts that may end an attempt in the dead-letter list."""
        return [*self.store.job_keys(d.job_id), self.store.dead_key, d.stream]

    async def start(self, d: Delivery, consumer: str, lease: str) -> StartResult:
        """Take the job under ``lease`` unless it was cancelled, finished or ran out of
        attempts (then it is dead-lettered: reason 'dead'). Idempotent for one lease: a
        retry after a lost reply returns the same attempt."""
        c = self.config
        reply = await self.store.scripts["start"](
            keys=self._attempt_keys(d),
            args=[
                d.msg_id,
                c.group,
                consumer,
                lease,
                repr(time.time()),
                c.max_attempts,
                c.record_ttl_s,
                c.events_maxlen,
                d.job_id,
            ],
        )
        if _s(reply[0]) != "run":
            return StartResult(run=False, reason=_s(reply[1]))
        request_json = _s(reply[1])
        return StartResult(run=True, request_json=request_json, attempts=int(reply[2]))

    async def progress(
        self, job_id: str, lease: str, event: generation_pb2.GenerateStreamResponse
    ) -> int:
        """Publish a progress event; 1 keep going, 2 cancel requested, 0 lease lost."""
        ev = generation_pb2.GenerateStreamResponse(progress=event.progress, previews=event.previews)
        return int(
            await self.store.scripts["progress"](
                keys=self.store.job_keys(job_id),
                args=[
                    lease,
                    event.progress.step,
                    event.progress.total_steps,
                    event.progress.stage,
                    ev.SerializeToString(),
                    self.config.events_maxlen,
                    self.config.record_ttl_s,
                ],
            )
        )

    async def commit(
        self, d: Delivery, result: generation_pb2.GenerateResponse, *, service_s: float
    ) -> str:
        """Store the result (first writer wins); 'committed', 'already', 'cancelled', 'gone'."""
        c, s = self.config, self.store
        reply = await s.scripts["commit"](
            keys=[*s.job_keys(d.job_id), s.result_key(d.job_id), s.stats_key, d.stream],
            args=[
                d.msg_id,
                c.group,
                result.SerializeToString(),
                repr(time.time()),
                c.result_ttl_s,
                c.record_ttl_s,
                c.events_maxlen,
                repr(service_s),
            ],
        )
        return _s(reply[0])

    async def fail(
        self, d: Delivery, lease: str, error: str, *, retryable: bool, detail: str = ""
    ) -> str:
        """An attempt failed: re-queue ('retry') or dead-letter ('dead'); 'stale' if the job
        is no longer ours."""
        c = self.config
        reply = await self.store.scripts["fail"](
            keys=self._attempt_keys(d),
            args=[
                d.msg_id,
                c.group,
                lease,
                error[:1000],
                repr(time.time()),
                c.max_attempts,
                "1" if retryable else "0",
                c.record_ttl_s,
                c.events_maxlen,
                d.job_id,
                detail[:4000],
            ],
        )
        return _s(reply[0])

    async def mark_cancelled(self, job_id: str) -> str:
        c = self.config
        reply = await self.store.scripts["cancelled"](
            keys=self.store.job_keys(job_id),
            args=[c.group, repr(time.time()), c.record_ttl_s, c.events_maxlen],
        )
        return _s(reply[0])

    async def release(self, job_id: str, lease: str) -> bool:
        c = self.config
        return bool(
            await self.store.scripts["release"](
                keys=self.store.job_keys(job_id),
                args=[lease, c.group, c.record_ttl_s, c.events_maxlen, job_id],
            )
        )

    async def heartbeat(self, consumer: str, held: list[Delivery], slots: int) -> list[str]:
        """Renew our messages' visibility. Per message: who holds it now (``consumer``: still
        ours, renewed; another name: that worker reclaimed it; '': no longer pending, the job
        ended or went back to the queue)."""
        args: list[Any] = [self.config.group, consumer, repr(time.time()), slots]
        for d in held:
            args += [d.stream, d.msg_id]
        s = self.store
        reply = await s.scripts["heartbeat"](keys=[s.workers_key, s.slots_key], args=args)
        return [_s(x) for x in reply]

    async def deregister(self, consumer: str) -> None:
        """Forget a stopping worker. Its consumer entry is deleted only where it holds no
        pending message (deleting a consumer drops its pending entries: they could never be
        reclaimed)."""
        s = self.store
        await s.redis.eval(
            lua.DEREGISTER,
            2,
            s.workers_key,
            s.slots_key,
            self.config.group,
            consumer,
            *s.streams.values(),
        )
