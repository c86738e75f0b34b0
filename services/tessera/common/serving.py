"""What every model deployment shares: loading from the bundle, batching knobs, health,
error translation at the gRPC edge, and calling handles that may raise wrapped errors."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tessera.common import metrics
from tessera.common.auth import check_api_key, grpc_authorization
from tessera.common.checkpoint import load_bundle_component
from tessera.common.device import pick_device
from tessera.common.errors import (
    InvalidArgument,
    TesseraError,
    Unavailable,
    grpc_status,
    public_message,
)
from tessera.common.limits import MAX_SERVICE_STEPS
from tessera.common.protos import check_count
from tessera.common.settings import get_settings

log = logging.getLogger("tessera")


def resolve_seed(seed: int | None) -> int:
    """The request's seed, or a fresh random one (returned to the caller for replay)."""
    return int(seed) if seed is not None else random.randrange(0, 2**31)


def diffusion_options(request: Any) -> tuple[float | None, int | None, int]:
    """A diffusion request's (SamplePrior, SampleLatents) ``guidance_scale`` (None: the
    model's default; its bounds are the sampler's own, checked on submit), ``steps`` (None:
    the model's; else 1..MAX_SERVICE_STEPS) and seed (``resolve_seed``)."""
    guidance = request.guidance_scale if request.HasField("guidance_scale") else None
    steps = None
    if request.HasField("steps"):
        check_count("steps", request.steps, 1, MAX_SERVICE_STEPS)
        steps = request.steps
    return guidance, steps, resolve_seed(request.seed if request.HasField("seed") else None)


def load_model(
    bundle_dir: str | Path, component: str, device: str | None
) -> tuple[nn.Module, torch.device]:
    """Load a verified bundle component onto this replica's device, timing it."""
    dev = pick_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(get_settings().torch_threads)
    start = time.perf_counter()
    model = load_bundle_component(Path(bundle_dir), component, device=dev)
    seconds = time.perf_counter() - start
    metrics.record_model_load(component, seconds)
    log.info("loaded %s from %s on %s in %.2fs", component, bundle_dir, dev, seconds)
    return model, dev


def unwrap_error(error: BaseException) -> BaseException:
    """Errors raised in another replica arrive wrapped (RayTaskError); return the cause."""
    for attr in ("cause", "original_exception", "_original_exception"):
        inner = getattr(error, attr, None)
        if isinstance(inner, BaseException) and inner is not error:
            return unwrap_error(inner)
    return error


# Ray's errors for a replica that went away mid-call (its node died, it crashed): the call
# never got an answer, and the model calls are pure (seeded), so trying another replica is
# safe. Matched by name: this module does not import Ray.
REPLICA_LOST_ERRORS = frozenset(
    {"RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError",
     "NodeDiedError", "ObjectLostError", "OwnerDiedError", "ActorDiedCause"}
)  # fmt: skip
REPLICA_LOST_ATTEMPTS = 2  # the call, and one retry on another (or a rescheduled) replica
REPLICA_LOST_RETRY_AFTER_S = 5.0


def replica_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps) says the called replica went away."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in REPLICA_LOST_ERRORS:
            return True
        inner = unwrap_error(error)
        error = inner if inner is not error else error.__cause__  # type: ignore[assignment]
    return False


async def call(handle_method: Any, *args: Any) -> Any:
    """Await a handle call and re-raise the domain error it carried, unwrapped.

    When the awaiting task is cancelled (its caller went away), the call is cancelled too:
    Ray's ``DeploymentResponse`` re-raises the CancelledError but leaves the downstream
    request running, so the model replica would finish work nobody waits for.

    A replica lost mid-call (its node died) is retried once: Serve routes the retry to a
    live replica, or holds it until one is rescheduled. If that fails too, the caller gets
    ``Unavailable`` (HTTP 503 / UNAVAILABLE, with Retry-After): retryable, and said so."""
    for attempt in range(1, REPLICA_LOST_ATTEMPTS + 1):
        response = handle_method.remote(*args)
        try:
            return await response
        except asyncio.CancelledError:
            cancel = getattr(response, "cancel", None)
            if cancel is not None:
                cancel()
            raise
        except BaseException as e:  # noqa: BLE001 - re-raised below
            inner = unwrap_error(e)
            if inner is not e and isinstance(inner, TesseraError):
                raise inner from None
            if not replica_lost(e):
                raise
            name = getattr(handle_method, "_method_name", None) or repr(handle_method)
            if attempt < REPLICA_LOST_ATTEMPTS:
                log.warning("replica lost during %s (%s); retrying once", name, type(e).__name__)
                continue
            raise Unavailable(
                "a model replica was lost (node failure); retry shortly",
                retry_after_s=REPLICA_LOST_RETRY_AFTER_S,
            ) from e
    raise AssertionError("unreachable")


def item_slices(sizes: Iterable[int]) -> list[slice]:
    """Each item's rows in a batch that concatenates items of these sizes, in order."""
    slices, start = [], 0
    for size in sizes:
        slices.append(slice(start, start + size))
        start += size
    return slices


def split_results(results: list[Any]) -> Any:
    """@serve.batch functions return an exception per failed item; raise it for its caller."""
    if isinstance(results, BaseException):
        raise results
    return results


class BatchKnobs:
    """Mixin for model deployments: ``reconfigure(user_config)`` sets the budget and wait of
    every @batched method listed in ``_batched_methods``; ``ping`` and ``check_health``.

    ``_batched_methods`` maps each method to the user_config key of its budget, so that one
    replica may batch several kinds of call (the Prior: samples, texts, images), each in its
    own cost unit. ``batch_wait_timeout_s`` applies to all of them.
    """

    _batched_methods: dict[str, str] = {}
    max_item_costs: dict[str, int] = {}  # per method, the costliest single request (__init__)

    def init_batching(self, **max_item_costs: int) -> None:
        """Record, per batched method, the costliest single request a replica accepts, and
        raise that method's budget to fit it."""
        self.max_item_costs = dict(max_item_costs)
        for name, cost in max_item_costs.items():
            method = getattr(self, name)
            method.set_max_batch_size(max(method._get_max_batch_size(), cost))

    def reconfigure(self, user_config: dict) -> None:
        """Each method's budget (in its cost unit) from its key, never below one maximal
        request (Serve would fail such a request); ``max_batch_size`` is an alias of
        ``max_batch_cost``. ``batch_wait_timeout_s``: how long a batch waits for company
        after its first request (0: take what is queued and go)."""
        wait = user_config.get("batch_wait_timeout_s")
        for name, key in self._batched_methods.items():
            method = getattr(self, name)
            size = user_config.get(key)
            if size is None and key == "max_batch_cost":
                size = user_config.get("max_batch_size")
            if size is not None:
                method.set_max_batch_size(max(int(size), self.max_item_costs.get(name, 0)))
            if wait is not None:
                method.set_batch_wait_timeout_s(float(wait))
        self.user_config = dict(user_config)

    async def ping(self) -> dict:
        """Cheap liveness answer for the gateway's /readyz."""
        return {"ok": True, "device": str(getattr(self, "device", "cpu"))}

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy."""
        if getattr(self, "model_loaded", False) is not True:
            raise RuntimeError("model not loaded")


def grpc_edge(method: Callable) -> Callable:
    """The public gRPC ingress: check the API key, translate domain errors to status codes.

    Wraps unary methods and server-streaming async generators with the signature
    ``(self, request, grpc_context)``. A call without the configured key is UNAUTHENTICATED
    (``tessera.common.auth``). The client sees the mapped code and the message (and, for an
    error with ``retry_after_s`` such as a full queue or a job store that is down, trailing
    metadata ``retry-after`` in whole seconds); unexpected errors become INTERNAL with a
    generic message (details go to the log).
    """

    def _authorize(context: Any, request: Any) -> None:
        try:
            check_api_key(grpc_authorization(context))
            check_parsed(request)
        except TesseraError as e:  # refused before any route: counted under "other"
            metrics.record_request(metrics.OTHER, e, "grpc", 0.0)
            raise

    def _fail(context: Any, error: BaseException) -> None:
        error = unwrap_error(error)
        if not isinstance(error, TesseraError):
            log.exception("unexpected error in %s", method.__name__, exc_info=error)
        context.set_code(grpc_status(error))
        context.set_details(public_message(error))
        retry_after = getattr(error, "retry_after_s", None)
        set_trailers = getattr(context, "set_trailing_metadata", None)
        if retry_after and set_trailers is not None:  # as HTTP's Retry-After, whole seconds
            set_trailers([("retry-after", str(max(1, math.ceil(retry_after))))])

    if inspect.isasyncgenfunction(method):

        @functools.wraps(method)
        async def stream_wrapper(self: Any, request: Any, grpc_context: Any) -> Any:
            try:
                _authorize(grpc_context, request)
                async for item in method(self, request, grpc_context):
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # A stream cannot "return" a status: Ray's proxy keeps the code set on the
                # context when the generator raises after setting it.
                _fail(grpc_context, e)
                raise

        return stream_wrapper

    @functools.wraps(method)
    async def unary_wrapper(self: Any, request: Any, grpc_context: Any) -> Any:
        try:
            _authorize(grpc_context, request)
            return await method(self, request, grpc_context)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - mapped to a status code
            _fail(grpc_context, e)
            response_type = getattr(method, "response_type", None)
            return response_type() if response_type else None

    return unary_wrapper


def check_parsed(request: Any) -> None:
    """A payload the proxy could not parse (``tessera.common.grpc_ingress``) is an
    InvalidArgument."""
    from tessera.common.grpc_ingress import MalformedRequest

    if isinstance(request, MalformedRequest):
        raise InvalidArgument(request.describe())


def returns(response_type: type) -> Callable[[Callable], Callable]:
    """Declare the response message type so grpc_edge can return an empty one on error."""

    def mark(method: Callable) -> Callable:
        method.response_type = response_type
        return method

    return mark


def _inside_replica() -> bool:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    try:
        serve.get_replica_context()
        return True
    except RayServeException:
        return False


class _LocalBatch:
    """``@serve.batch``'s eager queue for a class run in-process (no replica): items that
    queue while a batch runs form the next one, up to the budget, so 16 concurrent in-process
    callers batch as a replica's would. One per instance, method and event loop."""

    def __init__(self, fn: Callable, budget: int, size: Callable[[list], int]) -> None:
        self.fn, self.budget, self.size = fn, budget, size
        self.queue: list[tuple[Any, asyncio.Future]] = []
        self.draining = False

    async def submit(self, owner: Any, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.queue.append((item, future))
        if not self.draining:
            self.draining = True
            asyncio.get_running_loop().create_task(self._drain(owner))
        return await future

    async def _drain(self, owner: Any) -> None:
        try:
            while self.queue:
                batch: list[tuple[Any, asyncio.Future]] = []
                while self.queue and (
                    not batch
                    or self.size([i for i, _ in batch] + [self.queue[0][0]]) <= self.budget
                ):
                    entry = self.queue.pop(0)
                    if not entry[1].cancelled():
                        batch.append(entry)
                if not batch:
                    continue
                try:
                    results = await self.fn(owner, [item for item, _ in batch])
                except Exception as e:  # noqa: BLE001 - the batch's callers get it
                    results = [e] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self.draining = False


def batched(
    max_batch_size: int = 16,
    batch_wait_timeout_s: float = 0.0,
    cost: Callable[[Any], int] | None = None,
    **kwargs: Any,
) -> Callable:
    """``@serve.batch`` inside a Serve replica; in-process (benchmarks, evaluation), where
    Serve's batch queue cannot start, the same eager batching by :class:`_LocalBatch`.

    The method takes one item and returns that item's result; the decorated function takes
    ``(self, items: list)`` and returns one result per item, as with ``@serve.batch``. With
    ``cost(item)`` (pixels, cells, row-steps) ``max_batch_size`` is a budget of that cost, so
    a batch holds many small requests or a few large ones.

    The default wait is 0 (eager batching, Triton's default): a batch takes what queued
    while the previous one ran and starts at once, so a lone request never waits for
    company that is not coming, and a busy replica still forms full batches.
    """
    from ray import serve

    if cost is not None:
        kwargs["batch_size_fn"] = lambda items: sum(cost(item) for item in items)
    size = kwargs.get("batch_size_fn", len)

    def decorate(fn: Callable) -> Callable:
        served = serve.batch(
            max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s, **kwargs
        )(fn)

        @functools.wraps(fn)
        async def wrapper(self: Any, item: Any) -> Any:
            if _inside_replica():
                return await served(self, item)
            loop = asyncio.get_running_loop()
            queues = self.__dict__.setdefault("_local_batches", weakref.WeakKeyDictionary())
            local = queues.setdefault(loop, {}).get(fn.__name__)
            if local is None:
                budget = wrapper._get_max_batch_size()  # what init_batching set
                local = queues[loop][fn.__name__] = _LocalBatch(fn, budget, size)
            return await local.submit(self, item)

        for attr in (
            "set_max_batch_size",
            "set_batch_wait_timeout_s",
            "_get_max_batch_size",
            "_get_batch_wait_timeout_s",
        ):
            setattr(wrapper, attr, getattr(served, attr))
        return wrapper

    return decorate
