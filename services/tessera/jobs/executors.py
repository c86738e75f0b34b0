"""What runs a job: the executor signature and ``build_executor(spec)``.

An executor is any ``async def execute(params: JobRequest, on_event) ->
GenerateResponse`` (``on_event(GenerateStreamResponse) -> bool``; False asks it to stop, and it
raises ``tessera.common.errors.Cancelled``). In production it is the route code,
``tessera.routes.edit_requests.job_executor`` (``Pipelines.generate``, or ``Pipelines.edit``
for an edit job): over Serve handles in the ``JobWorker``
deployment, over in-process models (``LOCAL_ROUTES``) in the standalone worker.
``SYNTHETIC`` renders fake images without models, for tests and benchmarks only.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from tessera.routes.edit_requests import JobRequest, job_executor
from tessera.v1 import generation_pb2

Executor = Callable[
    [JobRequest, Callable[[generation_pb2.GenerateStreamResponse], Awaitable[bool]]],
    Awaitable[generation_pb2.GenerateResponse],
]
# The real routes over a bundle's models loaded in this process (kwargs: bundle_dir, device,
# ar_candidates): the standalone worker's default.
LOCAL_ROUTES = "tessera.routes.local:local_pipelines"
# Fake images from (prompt, seed), no models: tests and benchmarks name it explicitly.
SYNTHETIC = "tessera.jobs.synthetic:SyntheticExecutor"


async def build_executor(spec: str, *args: Any, **kwargs: Any) -> Executor:
    """Resolve ``"module:attr"`` to an executor.

    ``attr`` may be the executor itself (an ``async def``), or a factory/class called with
    ``*args, **kwargs`` whose result (awaited if awaitable) is the executor or has a
    ``generate`` method (e.g. ``tessera.routes.pipelines:Pipelines`` with the handles).
    """
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"executor spec {spec!r} must look like 'package.module:attr'")
    obj: Any = getattr(importlib.import_module(module_name), attr)
    if inspect.iscoroutinefunction(obj):
        if args or kwargs:
            raise ValueError(f"{spec} is an executor function; it takes no constructor args")
        return obj
    obj = obj(*args, **kwargs)
    if inspect.isawaitable(obj):
        obj = await obj
    if hasattr(obj, "edit") and hasattr(obj, "generate"):  # route code: edit jobs too
        return job_executor(obj)
    executor = getattr(obj, "generate", obj)
    if not callable(executor):
        raise TypeError(f"{spec} built {type(obj).__name__}, which is not an executor")
    return executor
