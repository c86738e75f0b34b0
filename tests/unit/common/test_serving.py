"""BatchKnobs: per-method batch budgets and the shared wait, from a deployment's user_config."""

from __future__ import annotations

import pytest

from tessera.common.serving import BatchKnobs, batched, item_slices


class TwoQueues(BatchKnobs):
    """A deployment with two batched call kinds, each budgeted in its own unit."""

    _batched_methods = {"_samples": "max_batch_cost", "_texts": "max_texts_per_batch"}

    def __init__(self) -> None:
        self.init_batching(_samples=100, _texts=8)

    @batched(max_batch_size=50, cost=lambda item: item)
    async def _samples(self, items: list[int]) -> list[int]:
        return items

    @batched(max_batch_size=64, cost=lambda item: item)
    async def _texts(self, items: list[int]) -> list[int]:
        return items


def budgets(d: TwoQueues) -> tuple[int, int]:
    return d._samples._get_max_batch_size(), d._texts._get_max_batch_size()


def test_budgets_fit_one_maximal_request_and_each_method_reads_its_own_key():
    d = TwoQueues()
    assert budgets(d) == (100, 64)  # the code default 50 is raised to fit a 100-cost request
    d.reconfigure({"max_batch_cost": 400, "max_texts_per_batch": 32})
    assert budgets(d) == (400, 32)
    d.reconfigure({"max_batch_cost": 10, "max_texts_per_batch": 2})  # below one request
    assert budgets(d) == (100, 8)
    d.reconfigure({"max_batch_size": 300})  # the old name of max_batch_cost
    assert budgets(d) == (300, 8)


def test_the_wait_is_eager_by_default_and_set_for_every_method():
    d = TwoQueues()
    assert d._samples._get_batch_wait_timeout_s() == 0.0
    assert d._texts._get_batch_wait_timeout_s() == 0.0
    d.reconfigure({"batch_wait_timeout_s": 0.02})
    assert d._samples._get_batch_wait_timeout_s() == 0.02
    assert d._texts._get_batch_wait_timeout_s() == 0.02
    assert d.user_config == {"batch_wait_timeout_s": 0.02}


def test_item_slices_cut_a_batch_back_into_its_items():
    assert item_slices([2, 0, 3]) == [slice(0, 2), slice(2, 2), slice(2, 5)]
    assert item_slices(iter([])) == []


async def test_call_cancels_the_handle_request_when_its_caller_is_cancelled():
    """Ray's DeploymentResponse does not cancel the downstream request when the task awaiting
    it is cancelled; call() does (a disconnected client must free the engines' rows)."""
    import asyncio

    from tessera.common.serving import call

    class Response:
        cancelled = False

        def __await__(self):
            return asyncio.sleep(3600).__await__()

        def cancel(self):
            self.cancelled = True

    response = Response()

    class Method:
        def remote(self, *args):
            return response

    task = asyncio.ensure_future(call(Method(), "request"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert response.cancelled


class RayActorError(Exception):
    """Stands for ray.exceptions.RayActorError (matched by name, like the real one)."""


class FlakyMethod:
    """A handle method whose first ``failures`` calls lose their replica."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or RayActorError("The actor died unexpectedly")

    def remote(self, *args):
        self.calls += 1
        failed = self.calls <= self.failures

        async def answer():
            if failed:
                raise self.error
            return ("ok", *args)

        return answer()


async def test_a_call_whose_replica_was_lost_is_retried_once():
    from tessera.common.serving import call

    method = FlakyMethod(failures=1)
    assert await call(method, 7) == ("ok", 7)
    assert method.calls == 2


async def test_a_replica_lost_twice_is_a_retryable_unavailable():
    from tessera.common.errors import Unavailable, http_status
    from tessera.common.serving import call

    wrapped = RuntimeError("wrapper")
    wrapped.cause = RayActorError("node died")  # as Ray wraps errors of another process
    method = FlakyMethod(failures=5, error=wrapped)
    with pytest.raises(Unavailable, match="retry") as caught:
        await call(method)
    assert method.calls == 2
    assert http_status(caught.value) == 503 and caught.value.retry_after_s > 0


async def test_other_errors_are_not_retried():
    from tessera.common.serving import call

    method = FlakyMethod(failures=1, error=ValueError("bug"))
    with pytest.raises(ValueError):
        await call(method)
    assert method.calls == 1


async def test_in_process_calls_batch_eagerly_within_the_budget():
    """Outside a replica, concurrent calls queue while a batch runs and form the next one
    (Serve's eager batching), within the budget; each caller gets its own result."""
    import asyncio

    class Recorder(BatchKnobs):
        _batched_methods = {"_double": "max_batch_cost"}

        def __init__(self) -> None:
            self.batches: list[list[int]] = []
            self.init_batching(_double=10)

        @batched(max_batch_size=10, cost=lambda item: item)
        async def _double(self, items: list[int]) -> list[int]:
            self.batches.append(list(items))
            await asyncio.sleep(0.01)
            return [2 * i for i in items]

    d = Recorder()
    results = await asyncio.gather(*(d._double(i) for i in (1, 2, 3, 4, 5, 6)))
    assert results == [2, 4, 6, 8, 10, 12]
    assert [i for b in d.batches for i in b] == [1, 2, 3, 4, 5, 6]
    assert all(sum(b) <= 10 for b in d.batches) and len(d.batches) < 6
