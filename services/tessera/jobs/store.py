"""The Redis side every queue user shares: one client, the key layout, the Lua scripts.

One ``QueueStore`` is held by the two halves of the queue: ``JobQueue`` (``queue.py``, the
client API) and its ``QueueConsumer`` (``consumer.py``, the worker primitives). The layout is
described in ``queue.py``.
"""

from __future__ import annotations

import hashlib
from typing import Self

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from tessera.jobs import lua
from tessera.jobs.records import PRIORITIES, QueueConfig


class QueueStore:
    """One ``redis.asyncio.Redis`` client (bytes replies, no decoding) and the queue's keys."""

    def __init__(self, client: aioredis.Redis, config: QueueConfig | None = None) -> None:
        self.redis = client
        self.config = config or QueueConfig()
        p = self.config.prefix
        self.streams = {prio: f"{p}:q:{prio}" for prio in PRIORITIES}
        self.dead_key = f"{p}:dead"
        self.stats_key = f"{p}:stats"
        self.workers_key = f"{p}:workers"
        self.slots_key = f"{p}:slots"
        self._ready = False
        self.scripts = {
            name: client.register_script(getattr(lua, name.upper()))
            for name in (
                "submit",
                "start",
                "progress",
                "commit",
                "fail",
                "cancelled",
                "cancel",
                "release",
                "heartbeat",
                "reclaim",
            )
        }

    @classmethod
    def from_url(cls, url: str, config: QueueConfig | None = None) -> Self:
        """A store with its own client (blocking reads allowed for ``config.block_s``)."""
        config = config or QueueConfig()
        client = aioredis.from_url(
            url,
            decode_responses=False,
            socket_timeout=config.block_s + 10.0,  # blocking reads must not time out
            socket_connect_timeout=5.0,
            health_check_interval=30,
        )
        return cls(client, config)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- keys ---------------------------------------------------------------------------------

    def job_key(self, job_id: str) -> str:
        return f"{self.config.prefix}:job:{job_id}"

    def result_key(self, job_id: str) -> str:
        return f"{self.config.prefix}:result:{job_id}"

    def events_key(self, job_id: str) -> str:
        return f"{self.config.prefix}:events:{job_id}"

    def job_keys(self, job_id: str) -> list[str]:
        """The job's hash and event stream: the first two KEYS of most scripts."""
        return [self.job_key(job_id), self.events_key(job_id)]

    def idem_key(self, key: str) -> str:
        return f"{self.config.prefix}:idem:{hashlib.sha256(key.encode()).hexdigest()}"

    async def setup(self) -> None:
        """Create the consumer groups (idempotent; redone after Redis lost its data)."""
        for stream in self.streams.values():
            try:
                await self.redis.xgroup_create(stream, self.config.group, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        self._ready = True

    async def ensure_setup(self) -> None:
        """``setup()`` once per store (and again after ``lost_data()``)."""
        if not self._ready:
            await self.setup()

    async def lost_data(self) -> None:
        """Redis came back empty (no persistence): recreate the consumer groups."""
        self._ready = False
        await self.setup()
