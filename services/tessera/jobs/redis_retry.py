"""What the jobs code does while Redis is down (unreachable, restarting, loading its data).

- ``REDIS_DOWN``: the errors that mean it. They are retryable: the job state is safe in Redis.
- API callers give up at once: ``store_errors()`` turns them into ``Unavailable`` (503 /
  UNAVAILABLE) with a ``Retry-After`` of ``STORE_RETRY_AFTER_S`` (a supervised embedded
  Redis is back within a second or two of dying).
- A worker waits it out: ``retrying(call)`` repeats one call (a commit, a fail) until Redis
  answers or ``give_up_s`` passes; its loops back off with a ``Backoff`` between tries and
  log once per outage, not once per try.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tessera.common.errors import Unavailable

T = TypeVar("T")

REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ConnectionError,
    OSError,
)

# A worker slot between two takes: first delay, longest while Redis is down (jittered), and
# longest after an unexpected error (not jittered); one ``Backoff`` serves both.
SLOT_FIRST_S, SLOT_DOWN_CAP_S, SLOT_ERROR_CAP_S = 0.1, 1.0, 5.0
# ``retrying``: first delay, longest delay, and when the error propagates (the message is
# then reclaimed after the visibility timeout).
CALL_FIRST_S, CALL_CAP_S, CALL_GIVE_UP_S = 0.05, 2.0, 30.0
# What a 503 tells API clients to wait (``Retry-After`` header / ``retry-after`` metadata).
STORE_RETRY_AFTER_S = 1.0


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Turn "Redis is down" into Unavailable (503 / UNAVAILABLE, with Retry-After) for API
    callers."""
    try:
        yield
    except REDIS_DOWN as e:
        raise Unavailable(
            "the job store is unavailable; retry shortly", retry_after_s=STORE_RETRY_AFTER_S
        ) from e


class Backoff:
    """The delays of one retry loop: ``first`` seconds, doubled after each failure up to
    ``cap``; with ``jitter``, each wait is the delay times a random 1..2. ``reset()`` after
    a success; ``fresh`` (no failure since) marks the first failure of an outage."""

    def __init__(self, first: float, cap: float, *, jitter: bool = False) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter
        self.delay = first

    @property
    def fresh(self) -> bool:
        return self.delay == self.first

    def reset(self) -> None:
        self.delay = self.first

    async def wait(self, *, cap: float | None = None, jitter: bool | None = None) -> None:
        """Sleep the current delay, then double it (up to ``cap``, default ``self.cap``)."""
        jitter = self.jitter if jitter is None else jitter
        delay = self.delay * (1 + random.random()) if jitter else self.delay
        self.delay = min(self.delay * 2, self.cap if cap is None else cap)
        await asyncio.sleep(delay)


async def retrying(call: Callable[[], Awaitable[T]], *, give_up_s: float = CALL_GIVE_UP_S) -> T:
    """``await call()``, retrying while Redis is down (e.g. restarting); after ``give_up_s``
    the error propagates."""
    deadline = time.monotonic() + give_up_s
    backoff = Backoff(CALL_FIRST_S, CALL_CAP_S)
    while True:
        try:
            return await call()
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            await backoff.wait()
