"""The jobs' "Redis is down" policy: which errors, the delay schedules, when a call gives up."""

from __future__ import annotations

import types

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tessera.common.errors import Unavailable
from tessera.jobs import redis_retry
from tessera.jobs.redis_retry import Backoff, retrying, store_errors


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The delays the policy asks for, without waiting them."""
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(redis_retry, "asyncio", types.SimpleNamespace(sleep=sleep))
    return delays


async def test_a_slot_backs_off_with_jitter_while_redis_is_down_and_further_on_errors(slept):
    backoff = Backoff(redis_retry.SLOT_FIRST_S, redis_retry.SLOT_DOWN_CAP_S, jitter=True)
    assert backoff.fresh
    for _ in range(6):
        await backoff.wait()
        assert not backoff.fresh
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]  # each wait is base x 1..2
    assert all(b <= d <= 2 * b for b, d in zip(bases, slept, strict=True)), slept
    backoff.reset()
    assert backoff.fresh
    slept.clear()
    for _ in range(8):
        await backoff.wait(cap=redis_retry.SLOT_ERROR_CAP_S, jitter=False)
    assert slept == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


async def test_retrying_repeats_a_call_while_redis_is_down(slept):
    failures = iter([RedisConnectionError("down"), ConnectionRefusedError(), OSError()])

    async def call() -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "committed"

    assert await retrying(call) == "committed"
    assert slept == pytest.approx([0.05, 0.1, 0.2])


async def test_retrying_gives_up_after_its_deadline_and_never_retries_other_errors(slept):
    async def down() -> None:
        raise RedisConnectionError("down")

    with pytest.raises(RedisConnectionError):
        await retrying(down, give_up_s=0.01)
    assert slept[:3] == pytest.approx([0.05, 0.1, 0.2]) and max(slept) <= 2.0
    slept.clear()

    async def broken() -> None:
        raise ValueError("not a Redis outage")

    with pytest.raises(ValueError):
        await retrying(broken)
    assert slept == []


def test_store_errors_turns_redis_down_into_unavailable():
    with pytest.raises(Unavailable) as info, store_errors():
        raise RedisConnectionError("down")
    assert isinstance(info.value.__cause__, RedisConnectionError)
    with pytest.raises(KeyError), store_errors():
        raise KeyError("not ours")
