"""In-process stand-ins for deployment handles, so the route code runs without Ray.

Benchmarks compare served latency against this; evaluation and the job queue's tests use it
to run the real models through the real route code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessera import registry
from tessera.common.checkpoint import read_bundle_index
from tessera.routes.bundle import BundleInfo
from tessera.routes.handles import ModelHandles
from tessera.routes.pipelines import Pipelines


class _LocalMethod:
    def __init__(self, fn: Any) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Any:
        """A coroutine for unary methods, an async generator for streaming ones."""
        return self._fn(*args)


class LocalHandle:
    """Looks like a DeploymentHandle: ``handle.Method.remote(req)`` and ``handle.options()``."""

    def __init__(self, instance: Any) -> None:
        self._instance = instance

    def options(self, **_: Any) -> LocalHandle:
        return self

    def __getattr__(self, name: str) -> _LocalMethod:
        return _LocalMethod(getattr(self._instance, name))


def local_handles(bundle_dir: str | Path, device: str | None = None) -> ModelHandles:
    """Instantiate, in this process, every registered model service the bundle has the
    components of."""
    components = read_bundle_index(Path(bundle_dir))["components"]
    return ModelHandles(
        **{
            entry.name: LocalHandle(entry.deployment_class().func_or_class(str(bundle_dir), device))
            for entry in registry.services_for(components)
        }
    )


def local_pipelines(
    bundle_dir: str | Path, device: str | None = None, ar_candidates: int | None = None
) -> Pipelines:
    """The routes over in-process models (no Ray)."""
    return Pipelines(local_handles(bundle_dir, device), BundleInfo.read(bundle_dir), ar_candidates)
