"""Tessera's application metrics: one module, Ray Serve's metrics API, created lazily.

Every metric is defined once in :data:`SPECS` and recorded through the small helpers below
(the registry behind them, and the local read-back, live in ``metric_registry.py``)
(``record_request``, ``observe_batch``, ``add_tokens``, …). Importing this module has no side
effects: it does not import Ray, and a metric object is created on its first use, in the
process that uses it. Where that happens decides the backend:

- inside a Serve replica: ``ray.serve.metrics`` (a ``prometheus_client`` metric inside a
  replica is *not* exported; Serve's classes are). Serve adds ``deployment``, ``replica`` and
  ``application`` labels itself, so a label of ours with one of those names is left to Serve;
- in a Ray process that is not a replica (a driver, a plain actor): ``ray.util.metrics``;
- without Ray (unit tests, the in-process gateway): an in-memory recorder that tests read
  with :func:`value` and :func:`observations`; a debug line says metrics are local.

Ray exports each metric with its namespace prefix: ``tessera_requests_total`` is scraped as
``ray_tessera_requests_total`` (see :attr:`MetricSpec.exported_name`). Counter names end in
``_total`` already, which Ray keeps as is (no ``_total_total``, and no deprecated gauge twin).
Label values are bounded: free-form ones (routes, components) must look like identifiers and
are capped per process; anything else becomes ``other``. Helpers never raise: a metric must
not fail a request (a failure is logged once per metric).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from tessera.common.metric_registry import (  # noqa: F401 - part of this module's API
    backend,
    observations,
    reset,
    value,
)
from tessera.common.metric_registry import registry as _registry

# Ray's Prometheus namespace: every application metric is exported as "ray_<name>".
RAY_PREFIX = "ray_"

# Request latency: 5 ms (a health check) .. 60 s (a large unCLIP batch on a CPU).
LATENCY_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip
# Time a job waits in the queue: 10 ms .. 30 min.
QUEUE_WAIT_BUCKETS_S = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
# Items per batched model call: images, grids, or sampler rows (up to an engine's max_rows).
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)

# gRPC status code names, lower case: the `status` label (same for HTTP and gRPC ingress).
STATUS_CODES = (
    "ok", "cancelled", "unknown", "invalid_argument", "deadline_exceeded", "not_found",
    "already_exists", "permission_denied", "resource_exhausted", "failed_precondition",
    "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss",
    "unauthenticated",
)  # fmt: skip
# Statuses that are the server's fault: the error-ratio alert and panel count these.
SERVER_ERROR_CODES = (
    "unknown", "deadline_exceeded", "unimplemented", "internal", "unavailable", "data_loss",
)  # fmt: skip
INGRESSES = ("http", "grpc", "job", "handle")
PRIORITIES = ("high", "normal")  # tessera.jobs.queue.PRIORITIES
JOB_OUTCOMES = ("succeeded", "failed", "cancelled", "expired", "retried")
OTHER = "other"
_HTTP_TO_STATUS = {
    400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found",
    405: "unimplemented", 408: "deadline_exceeded", 409: "already_exists",
    412: "failed_precondition", 413: "invalid_argument", 415: "invalid_argument",
    422: "invalid_argument", 429: "resource_exhausted", 499: "cancelled", 500: "internal",
    501: "unimplemented", 502: "unavailable", 503: "unavailable", 504: "deadline_exceeded",
}  # fmt: skip

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its Ray name, type, our labels and (histograms) bucket bounds."""

    name: str
    kind: Kind
    description: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def exported_name(self) -> str:
        """The family name Prometheus scrapes (Ray prefixes its namespace)."""
        return RAY_PREFIX + self.name

    @property
    def series_names(self) -> tuple[str, ...]:
        """Sample names in the exposition (histograms expand to bucket/sum/count)."""
        if self.kind == "histogram":
            return tuple(f"{self.exported_name}_{s}" for s in ("bucket", "sum", "count"))
        return (self.exported_name,)


REQUESTS = MetricSpec(
    "tessera_requests_total", "counter",
    "Public API requests handled, by route, final status (gRPC code name) and ingress.",
    ("route", "status", "ingress"),
)  # fmt: skip
REQUEST_DURATION = MetricSpec(
    "tessera_request_duration_seconds", "histogram",
    "Public API request latency in seconds, from arrival to the last byte, by route and status.",
    ("route", "status"), LATENCY_BUCKETS_S,
)  # fmt: skip
ERRORS = MetricSpec(
    "tessera_errors_total", "counter",
    "Errors raised, by the component that saw them and their status code.",
    ("component", "code"),
)  # fmt: skip
JOB_QUEUE_DEPTH = MetricSpec(
    "tessera_job_queue_depth", "gauge", "Jobs waiting in the queue, by priority.", ("priority",)
)  # fmt: skip
JOBS = MetricSpec(
    "tessera_jobs_total", "counter", "Jobs finished, by outcome and priority.",
    ("outcome", "priority"),
)  # fmt: skip
JOB_QUEUE_WAIT = MetricSpec(
    "tessera_job_queue_wait_seconds", "histogram",
    "Seconds a job waited between submission and its first start, by priority.",
    ("priority",), QUEUE_WAIT_BUCKETS_S,
)  # fmt: skip
BATCH_SIZE = MetricSpec(
    "tessera_batch_size", "histogram", "Items per batched model call, by deployment.",
    ("deployment",), BATCH_SIZE_BUCKETS,
)  # fmt: skip
LM_TOKENS = MetricSpec(
    "tessera_lm_tokens_generated_total", "counter",
    "Image tokens sampled by the autoregressive LM (rate() gives tokens per second).",
)  # fmt: skip
DENOISING_STEPS = MetricSpec(
    "tessera_denoising_steps_total", "counter",
    "Diffusion sampler steps run (one per scheduler step per batch), by component.",
    ("component",),
)  # fmt: skip
MODEL_LOAD = MetricSpec(
    "tessera_model_load_seconds", "gauge",
    "Seconds the last load of a model component took in this replica.", ("component",),
)  # fmt: skip
IMAGES = MetricSpec(
    "tessera_images_generated_total", "counter", "Images returned to callers, by route.",
    ("route",),
)  # fmt: skip

REDIS_RESTARTS = MetricSpec(
    "tessera_redis_restarts_total", "counter",
    "Times the supervisor of the embedded redis-server restarted it after it died.",
)  # fmt: skip

SPECS: tuple[MetricSpec, ...] = (
    REQUESTS, REQUEST_DURATION, ERRORS, JOB_QUEUE_DEPTH, JOBS, JOB_QUEUE_WAIT, BATCH_SIZE,
    LM_TOKENS, DENOISING_STEPS, MODEL_LOAD, IMAGES, REDIS_RESTARTS,
)  # fmt: skip


# -- label values ----------------------------------------------------------------------------


class _OpenLabel:
    """A free-form label value: identifier-shaped, at most ``cap`` distinct values a process."""

    _PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,47}$")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, raw: object) -> str:
        text = str(raw)
        if text in self.seen:
            return text
        if not self._PATTERN.match(text):
            return OTHER
        with self.lock:
            if len(self.seen) >= self.cap:
                return OTHER
            self.seen.add(text)
        return text


_routes = _OpenLabel(cap=32)
_components = _OpenLabel(cap=24)
_deployments = _OpenLabel(cap=24)


def _closed(raw: object, allowed: tuple[str, ...]) -> str:
    text = str(raw).lower()
    return text if text in allowed else OTHER


def normalize_status(status: object) -> str:
    """A bounded status label from an HTTP code, a gRPC ``StatusCode``, a code name or an
    exception (mapped through :mod:`tessera.common.errors`)."""
    if isinstance(status, BaseException):
        import asyncio

        if isinstance(status, asyncio.CancelledError):
            return "cancelled"
        from tessera.common.errors import error_code_name

        return error_code_name(status)
    if isinstance(status, int) and not isinstance(status, bool):
        if 100 <= status < 400:
            return "ok"
        return _HTTP_TO_STATUS.get(status, "invalid_argument" if status < 500 else "internal")
    name = getattr(status, "name", status)  # grpc.StatusCode
    text = str(name).lower()
    if text.isascii() and text.isdigit():
        return normalize_status(int(text))
    return text if text in STATUS_CODES else "unknown"


# -- helpers (what services call) -------------------------------------------------------------


def record_request(route: str, status: object, ingress: str, seconds: float) -> None:
    """One finished public request. ``status``: HTTP code, gRPC code/name or the exception.

    A non-ok status also counts in ``tessera_errors_total{component="gateway"}``."""
    code = normalize_status(status)
    route_label = _routes(route)
    reg = _registry()
    ingress_label = _closed(ingress, INGRESSES)
    reg.record(REQUESTS, 1, {"route": route_label, "status": code, "ingress": ingress_label})
    reg.record(REQUEST_DURATION, max(float(seconds), 0.0), {"route": route_label, "status": code})
    if code != "ok":
        reg.record(ERRORS, 1, {"component": "gateway", "code": code})


@contextmanager
def track_request(route: str, ingress: str) -> Iterator[None]:
    """``with track_request("ar", "http"): ...`` records status (from the exception, if any)
    and latency; the exception propagates."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as e:
        record_request(route, e, ingress, time.perf_counter() - start)
        raise
    record_request(route, "ok", ingress, time.perf_counter() - start)


def record_error(component: str, error: object) -> None:
    """An error raised in a component (``error``: exception, code name or HTTP code)."""
    tags = {"component": _components(component), "code": normalize_status(error)}
    _registry().record(ERRORS, 1, tags)


def set_queue_depth(priority: str, n: int) -> None:
    """Jobs queued at ``priority`` now. Set it on every poll: Ray drops a gauge series that
    is not refreshed for about two report intervals."""
    _registry().record(JOB_QUEUE_DEPTH, max(int(n), 0), {"priority": _closed(priority, PRIORITIES)})


def record_job(outcome: str, seconds_in_queue: float | None, *, priority: str = "normal") -> None:
    """A job finished with ``outcome``; ``seconds_in_queue`` from submit to first start
    (None if it never started, e.g. cancelled while queued)."""
    tags = {"priority": _closed(priority, PRIORITIES)}
    reg = _registry()
    reg.record(JOBS, 1, {"outcome": _closed(outcome, JOB_OUTCOMES), **tags})
    if seconds_in_queue is not None:
        reg.record(JOB_QUEUE_WAIT, max(float(seconds_in_queue), 0.0), tags)


def observe_batch(deployment: str, size: int) -> None:
    """Items in one batched call. Inside a replica Serve's own ``deployment`` label is used."""
    if size > 0:
        _registry().record(BATCH_SIZE, int(size), {"deployment": _deployments(deployment)})


def add_tokens(n: int) -> None:
    """Image tokens sampled by the LM (all rows of a batch)."""
    if n > 0:
        _registry().record(LM_TOKENS, int(n), {})


def add_denoise_steps(n: int, *, component: str = "decoder") -> None:
    """Sampler steps completed by ``component`` (decoder, prior)."""
    if n > 0:
        _registry().record(DENOISING_STEPS, int(n), {"component": _components(component)})


def record_model_load(component: str, seconds: float) -> None:
    """How long loading ``component`` from the bundle took in this replica (kept exported
    for the replica's lifetime)."""
    tags = {"component": _components(component)}
    _registry().hold(MODEL_LOAD, max(float(seconds), 0.0), tags)


def add_images(route: str, n: int) -> None:
    """Images returned on ``route`` (ar, unclip, variations)."""
    if n > 0:
        _registry().record(IMAGES, int(n), {"route": _routes(route)})


def record_redis_restart() -> None:
    """The embedded redis-server died and its supervisor started it again."""
    _registry().record(REDIS_RESTARTS, 1, {})
