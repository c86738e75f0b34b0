"""Where Tessera's metrics go: the per-process registry behind ``tessera.common.metrics``.

The backend is chosen on first use, in the process that records (see ``metrics``): Serve's
metrics inside a replica, ``ray.util.metrics`` in other Ray processes, and an in-memory
recorder without Ray, which tests read back with :func:`value` and :func:`observations`.
Services never import this module; they call the helpers in ``metrics``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tessera.common.metrics import MetricSpec

log = logging.getLogger("tessera.metrics")

# Ray drops a gauge series that is not set again within two report intervals (20 s by
# default). A value set once and meant to stay (a model's load time) is set again this often
# by a daemon thread of the process that recorded it (see `_Registry.hold`).
GAUGE_REFRESH_S = 5.0

# Serve adds these labels inside a replica and refuses them from the user.
_SERVE_LABELS = frozenset({"deployment", "replica", "application"})


class _LocalMetric:
    """In-memory stand-in used where no Ray runs; keeps what a test needs to assert on."""

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.lock = threading.Lock()
        self.values: dict[tuple[tuple[str, str], ...], float] = {}
        self.samples: dict[tuple[tuple[str, str], ...], list[float]] = {}

    def record(self, value: float, tags: dict[str, str]) -> None:
        key = tuple(sorted(tags.items()))
        with self.lock:
            if self.spec.kind == "counter":
                self.values[key] = self.values.get(key, 0.0) + value
            elif self.spec.kind == "gauge":
                self.values[key] = value
            else:
                self.samples.setdefault(key, []).append(value)


def _detect_backend() -> str:
    """serve | ray | local, without importing Ray (if Ray is not imported, it is not running)."""
    ray = sys.modules.get("ray")
    if ray is None:
        return "local"
    context = sys.modules.get("ray.serve.context")
    try:
        if context is not None and context._get_internal_replica_context() is not None:
            return "serve"
        if ray.is_initialized():
            return "ray"
    except Exception:  # noqa: BLE001 - a half-imported Ray is "no Ray"
        pass
    return "local"


class _Registry:
    """The metric objects of one process, each created on first use."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.lock = threading.Lock()
        self.metrics: dict[str, Any] = {}
        self.failed: set[str] = set()
        self.held: dict[tuple, tuple[MetricSpec, float, dict[str, str]]] = {}
        self.refresher: threading.Thread | None = None
        if backend == "local":
            log.debug("no Ray in this process: Tessera metrics are kept in memory only")

    def labels_for(self, spec: MetricSpec) -> tuple[str, ...]:
        if self.backend == "serve":
            return tuple(k for k in spec.labels if k not in _SERVE_LABELS)
        return spec.labels

    def get(self, spec: MetricSpec) -> Any:
        metric = self.metrics.get(spec.name)
        if metric is None:
            with self.lock:
                metric = self.metrics.get(spec.name)
                if metric is None:
                    metric = self.metrics[spec.name] = self._create(spec)
        return metric

    def _create(self, spec: MetricSpec) -> Any:
        if self.backend == "local":
            return _LocalMetric(spec)
        if self.backend == "serve":
            from ray.serve import metrics as impl
        else:
            from ray.util import metrics as impl
        keys = self.labels_for(spec)
        if spec.kind == "counter":
            return impl.Counter(spec.name, description=spec.description, tag_keys=keys)
        if spec.kind == "gauge":
            return impl.Gauge(spec.name, description=spec.description, tag_keys=keys)
        return impl.Histogram(
            spec.name, description=spec.description, boundaries=list(spec.buckets or ()),
            tag_keys=keys,
        )  # fmt: skip

    def record(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        try:
            metric = self.get(spec)
            if self.backend == "local":
                metric.record(float(value), tags)
                return
            tags = {k: v for k, v in tags.items() if k in self.labels_for(spec)}
            if spec.kind == "counter":
                metric.inc(value, tags=tags)
            elif spec.kind == "gauge":
                metric.set(value, tags=tags)
            else:
                metric.observe(value, tags=tags)
        except Exception:  # noqa: BLE001 - metrics never fail a request
            if spec.name not in self.failed:
                self.failed.add(spec.name)
                log.warning("recording metric %s failed", spec.name, exc_info=True)

    def hold(self, spec: MetricSpec, value: float, tags: dict[str, str]) -> None:
        """Set a gauge and keep setting it to ``value`` every ``GAUGE_REFRESH_S`` while this
        process (and this registry) lives, so that Ray does not age the series out."""
        self.record(spec, value, tags)
        if self.backend == "local":
            return
        with self.lock:
            self.held[(spec.name, tuple(sorted(tags.items())))] = (spec, value, tags)
            if self.refresher is None:
                self.refresher = threading.Thread(
                    target=self._refresh, name="tessera-metrics-refresh", daemon=True
                )
                self.refresher.start()

    def _refresh(self) -> None:
        while _REGISTRY is self:
            time.sleep(GAUGE_REFRESH_S)
            with self.lock:
                held = list(self.held.values())
            for spec, value, tags in held:
                self.record(spec, value, tags)


_REGISTRY: _Registry | None = None
_REGISTRY_LOCK = threading.Lock()
_FORCED_BACKEND: str | None = None


def registry() -> _Registry:
    """This process's registry; a local one is replaced once Ray starts here."""
    global _REGISTRY
    reg = _REGISTRY
    # A local registry is re-checked: Ray may have started in this process since.
    if reg is not None and (reg.backend != "local" or _FORCED_BACKEND is not None):
        return reg
    backend = _FORCED_BACKEND or _detect_backend()
    if reg is not None and reg.backend == backend:
        return reg
    with _REGISTRY_LOCK:
        if _REGISTRY is None or _REGISTRY.backend != backend:
            _REGISTRY = _Registry(backend)
        return _REGISTRY


def backend() -> str:
    """Where this process's metrics go: ``serve``, ``ray`` or ``local``."""
    return registry().backend


def reset(backend: str | None = None) -> None:
    """Forget every metric object (tests); ``backend`` forces serve | ray | local."""
    global _REGISTRY, _FORCED_BACKEND
    if backend not in (None, "serve", "ray", "local"):
        raise ValueError(f"unknown metrics backend {backend!r}")
    with _REGISTRY_LOCK:
        _REGISTRY = None
        _FORCED_BACKEND = backend


# -- reading back (local backend) -------------------------------------------------------------


def _local(spec: MetricSpec) -> _LocalMetric | None:
    reg = registry()
    if reg.backend != "local":
        raise RuntimeError(f"metrics go to Ray here ({reg.backend}); they are not kept locally")
    return reg.metrics.get(spec.name)


def _matches(key: tuple[tuple[str, str], ...], labels: dict[str, str]) -> bool:
    items = dict(key)
    return all(items.get(k) == v for k, v in labels.items())


def value(spec: MetricSpec, **labels: str) -> float:
    """Local backend: a counter's total or a gauge's value over series matching ``labels``."""
    metric = _local(spec)
    if metric is None:
        return 0.0
    with metric.lock:
        return sum(v for k, v in metric.values.items() if _matches(k, labels))


def observations(spec: MetricSpec, **labels: str) -> list[float]:
    """Local backend: the values a histogram observed over series matching ``labels``."""
    metric = _local(spec)
    if metric is None:
        return []
    with metric.lock:
        return [x for k, xs in metric.samples.items() if _matches(k, labels) for x in xs]
