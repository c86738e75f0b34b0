"""Retries with exponential backoff and full jitter, honouring the server's Retry-After, all
inside the call's deadline. The sync and async loops share :meth:`RetryPolicy.next_wait`."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tessera_client.errors import DeadlineExceeded, TesseraAPIError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried and how long to wait between attempts.

    Retried: 429 / RESOURCE_EXHAUSTED, 503 / UNAVAILABLE and connection failures (the request
    never reached a server), at most ``max_retries`` times. Wait before retry ``i`` (0-based):
    the server's Retry-After when it sent one, else a uniform draw from
    ``[0, min(max_backoff, base_backoff * 2**i)]`` ("full jitter"). A wait that would pass the
    call's deadline (or exceed ``max_wait``) is not taken: the error is raised instead.
    """

    max_retries: int = 3
    base_backoff: float = 0.5
    max_backoff: float = 8.0
    max_wait: float = 60.0

    def next_wait(
        self, error: TesseraAPIError, retry: int, deadline: float | None, rng: random.Random
    ) -> float | None:
        """Seconds to sleep before retry number ``retry`` (0-based), or None to give up."""
        if not error.retryable or retry >= self.max_retries:
            return None
        if error.retry_after is not None:
            # A little jitter on top, so clients told the same time do not return in lockstep.
            wait = error.retry_after + rng.uniform(0, min(0.25, 0.1 * error.retry_after))
        else:
            wait = rng.uniform(0, min(self.max_backoff, self.base_backoff * 2**retry))
        if wait > self.max_wait:
            return None
        if deadline is not None and time.monotonic() + wait >= deadline:
            return None
        return wait


def remaining(deadline: float | None) -> float | None:
    """Seconds left before the deadline (raises DeadlineExceeded when none are)."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(
            "deadline exceeded before the request was sent", code="deadline_exceeded"
        )
    return left


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def run_sync(
    attempt: Callable[[float | None], T],
    policy: RetryPolicy,
    deadline: float | None,
    rng: random.Random,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt(seconds_left)`` until it succeeds or the policy gives up."""
    retry = 0
    while True:
        try:
            return attempt(remaining(deadline))
        except TesseraAPIError as e:
            wait = policy.next_wait(e, retry, deadline, rng)
            if wait is None:
                raise
        sleep(wait)
        retry += 1


async def run_async(
    attempt: Callable[[float | None], Awaitable[T]],
    policy: RetryPolicy,
    deadline: float | None,
    rng: random.Random,
) -> T:
    """The async twin of :func:`run_sync`."""
    retry = 0
    while True:
        try:
            return await attempt(remaining(deadline))
        except TesseraAPIError as e:
            wait = policy.next_wait(e, retry, deadline, rng)
            if wait is None:
                raise
        await asyncio.sleep(wait)
        retry += 1
