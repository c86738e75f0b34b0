"""tessera.common.metrics: helpers record outside Ray, bound their labels, build real Ray
metric objects in every backend, and export the names deploy/README.md documents."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest

from tessera.common import metrics
from tessera.common.errors import InvalidArgument, ModelNotReady

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def fresh_metrics():
    metrics.reset()
    yield
    metrics.reset()


def test_import_is_side_effect_free():
    code = (
        "import sys, tessera.common.metrics, tessera.common.metric_registry as r;"
        " print('ray' in sys.modules, r._REGISTRY)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(REPO / "services")},
    )  # fmt: skip
    assert out.stdout.split() == ["False", "None"]


def test_helpers_record_locally_without_ray():
    metrics.reset("local")
    metrics.record_request("ar", 200, "http", 0.12)
    metrics.record_request("ar", InvalidArgument("bad"), "grpc", 0.01)
    metrics.record_request("unclip", grpc.StatusCode.UNAVAILABLE, "grpc", 2.0)
    metrics.add_images("ar", 4)
    metrics.add_images("ar", 0)  # nothing to count: not recorded, no error
    metrics.add_tokens(256)
    metrics.add_tokens(256)
    metrics.add_denoise_steps(25)
    metrics.add_denoise_steps(10, component="prior")
    metrics.observe_batch("Decoder", 3)
    metrics.set_queue_depth("high", 5)
    metrics.set_queue_depth("high", 2)
    metrics.record_job("succeeded", 1.5, priority="high")
    metrics.record_job("cancelled", None)
    metrics.record_model_load("decoder", 0.8)
    metrics.record_error("decoder", ModelNotReady("missing"))

    assert metrics.backend() == "local"
    assert metrics.value(metrics.REQUESTS) == 3
    assert metrics.value(metrics.REQUESTS, route="ar", status="ok", ingress="http") == 1
    assert metrics.value(metrics.REQUESTS, status="invalid_argument", ingress="grpc") == 1
    assert metrics.observations(metrics.REQUEST_DURATION, route="ar") == [0.12, 0.01]
    # Non-ok requests count as gateway errors; components add their own.
    assert metrics.value(metrics.ERRORS, component="gateway") == 2
    assert metrics.value(metrics.ERRORS, component="decoder", code="unavailable") == 1
    assert metrics.value(metrics.IMAGES, route="ar") == 4
    assert metrics.value(metrics.LM_TOKENS) == 512
    assert metrics.value(metrics.DENOISING_STEPS, component="decoder") == 25
    assert metrics.value(metrics.DENOISING_STEPS, component="prior") == 10
    assert metrics.observations(metrics.BATCH_SIZE, deployment="Decoder") == [3]
    assert metrics.value(metrics.JOB_QUEUE_DEPTH, priority="high") == 2  # a gauge keeps the last
    assert metrics.value(metrics.JOBS, outcome="succeeded", priority="high") == 1
    assert metrics.value(metrics.JOBS, outcome="cancelled", priority="normal") == 1
    assert metrics.observations(metrics.JOB_QUEUE_WAIT) == [1.5]  # never-started job: no wait
    assert metrics.value(metrics.MODEL_LOAD, component="decoder") == 0.8


def test_track_request_records_status_from_the_exception():
    metrics.reset("local")
    with metrics.track_request("ar", "http"):
        pass
    with pytest.raises(InvalidArgument), metrics.track_request("ar", "http"):
        raise InvalidArgument("n must be 1..4")
    with pytest.raises(asyncio.CancelledError), metrics.track_request("unclip", "grpc"):
        raise asyncio.CancelledError
    assert metrics.value(metrics.REQUESTS, status="ok") == 1
    assert metrics.value(metrics.REQUESTS, status="invalid_argument") == 1
    assert metrics.value(metrics.REQUESTS, route="unclip", status="cancelled") == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (200, "ok"), (204, "ok"), (400, "invalid_argument"), (422, "invalid_argument"),
        (401, "unauthenticated"), (404, "not_found"), (429, "resource_exhausted"),
        (499, "cancelled"), (500, "internal"), (503, "unavailable"), (418, "invalid_argument"),
        (599, "internal"), ("OK", "ok"), ("503", "unavailable"), ("NOT_FOUND", "not_found"),
        ("teapot", "unknown"), (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"),
        (RuntimeError("boom"), "internal"), (ModelNotReady("x"), "unavailable"),
    ],
)  # fmt: skip
def test_status_is_a_bounded_grpc_code_name(status, code):
    assert metrics.normalize_status(status) == code
    assert code in metrics.STATUS_CODES


def test_label_values_are_bounded():
    metrics.reset("local")
    metrics.record_request("ar", 200, "carrier-pigeon", 0.1)
    metrics.record_request("../../etc/passwd", 200, "http", 0.1)
    metrics.record_request("x" * 200, 200, "http", 0.1)
    metrics.set_queue_depth("urgent!!", 1)
    metrics.record_job("exploded", 0.1, priority="normal")
    assert metrics.value(metrics.REQUESTS, ingress="other") == 1
    assert metrics.value(metrics.REQUESTS, route="other") == 2
    assert metrics.value(metrics.JOB_QUEUE_DEPTH, priority="other") == 1
    assert metrics.value(metrics.JOBS, outcome="other") == 1
    # A flood of distinct (valid-looking) routes stops at the cap.
    for i in range(100):
        metrics.add_images(f"route{i}", 1)
    seen = {dict(k)["route"] for k in metrics._registry().metrics[metrics.IMAGES.name].values}
    assert len(seen) <= metrics._routes.cap + 1 and "other" in seen


def test_negative_or_zero_values_never_raise():
    metrics.reset("local")
    metrics.add_tokens(0)
    metrics.add_tokens(-3)
    metrics.add_denoise_steps(0)
    metrics.observe_batch("LM", 0)
    metrics.record_request("ar", 200, "http", -1.0)  # clock skew: clamped
    metrics.set_queue_depth("normal", -2)
    assert metrics.value(metrics.LM_TOKENS) == 0
    assert metrics.observations(metrics.REQUEST_DURATION) == [0.0]
    assert metrics.value(metrics.JOB_QUEUE_DEPTH) == 0


def _record_everything() -> None:
    metrics.record_request("ar", 200, "http", 0.1)
    metrics.record_request("ar", 500, "grpc", 0.1)
    metrics.record_error("lm", "internal")
    metrics.set_queue_depth("normal", 3)
    metrics.record_job("failed", 2.0)
    metrics.observe_batch("LanguageModel", 8)
    metrics.add_tokens(64)
    metrics.add_denoise_steps(5)
    metrics.record_model_load("lm", 1.25)
    metrics.add_images("unclip", 2)
    metrics.record_redis_restart()


def test_ray_backend_builds_real_ray_metrics(caplog):
    """Outside a replica with Ray present, ray.util.metrics objects are built and recorded
    (Ray accepts records before ray.init and drops them; nothing may raise or warn)."""
    pytest.importorskip("ray")
    metrics.reset("ray")
    with caplog.at_level("WARNING", logger="tessera.metrics"):
        _record_everything()
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    from ray.util import metrics as ray_metrics

    built = metrics._registry().metrics
    assert set(built) == {s.name for s in metrics.SPECS}
    assert isinstance(built[metrics.REQUESTS.name], ray_metrics.Counter)
    assert built[metrics.BATCH_SIZE.name].info["tag_keys"] == ("deployment",)
    assert built[metrics.REQUEST_DURATION.name].boundaries[0] == 0.005
    assert built[metrics.REQUEST_DURATION.name].boundaries[-1] == 60.0


def test_serve_backend_inside_a_replica_leaves_serve_labels_to_serve(caplog):
    """In a replica Serve adds deployment/replica/application and refuses them from us."""
    pytest.importorskip("ray.serve")
    from ray.serve import context
    from ray.serve import metrics as serve_metrics
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve._private.config import DeploymentConfig
    from ray.serve.schema import ReplicaRank

    replica = ReplicaID("abc123", DeploymentID(name="LanguageModel", app_name="tessera"))
    context._set_internal_replica_context(
        replica_id=replica, servable_object=None, _deployment_config=DeploymentConfig(),
        rank=ReplicaRank(rank=0, node_rank=0, local_rank=0), world_size=1,
    )  # fmt: skip
    try:
        metrics.reset()
        assert metrics.backend() == "serve"
        with caplog.at_level("WARNING", logger="tessera.metrics"):
            _record_everything()
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        built = metrics._registry().metrics
        batch = built[metrics.BATCH_SIZE.name]
        assert isinstance(batch, serve_metrics.Histogram)
        assert batch.info["tag_keys"] == ("deployment", "replica", "application")
        assert batch.info["default_tags"]["deployment"] == "LanguageModel"
        assert built[metrics.REQUESTS.name].info["tag_keys"][-3:] == ("route", "status", "ingress")
    finally:
        context._INTERNAL_REPLICA_CONTEXT = None


EXPORT_SCRIPT = textwrap.dedent(
    """
    import prometheus_client
    from ray._private.telemetry.open_telemetry_metric_recorder import (
        OpenTelemetryMetricRecorder,
    )
    from tessera.common import metrics

    recorder = OpenTelemetryMetricRecorder(gauge_metric_ttl_seconds=60)
    for spec in metrics.SPECS:
        tags = {k: "x" for k in spec.labels}
        if spec.kind == "counter":
            recorder.register_counter_metric(spec.name, spec.description)
        elif spec.kind == "gauge":
            recorder.register_gauge_metric(spec.name, spec.description)
        else:
            recorder.register_histogram_metric(spec.name, spec.description, list(spec.buckets))
        recorder.set_metric_value(spec.name, tags, 1.0)
    print(prometheus_client.generate_latest().decode())
    """
)


def test_exported_names_match_the_specs():
    """Run Ray's own exporter path (OpenTelemetry -> Prometheus text, as the node's metrics
    agent does) and check each family's scraped name: ray_ prefix, one _total on counters."""
    pytest.importorskip("ray")
    out = subprocess.run(
        [sys.executable, "-c", EXPORT_SCRIPT], capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(REPO / "services"), "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    types = {
        line.split()[2]: line.split()[3]
        for line in out.stdout.splitlines()
        if line.startswith("# TYPE ray_tessera")
    }
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    samples = {line.split("{")[0].split()[0] for line in lines if not line.startswith("#")}
    for spec in metrics.SPECS:
        family = spec.exported_name
        kind = types.get(family) or types.get(family.removesuffix("_total"))
        assert kind == spec.kind, (spec.name, types)
        for name in spec.series_names:
            assert name in samples, (name, sorted(s for s in samples if "tessera" in s))
    assert not any(s.endswith("_total_total") for s in samples)


def test_every_metric_is_documented():
    readme = (REPO / "deploy" / "README.md").read_text()
    for spec in metrics.SPECS:
        assert f"`{spec.exported_name}`" in readme, f"{spec.exported_name} not in deploy/README.md"
        for label in spec.labels:
            assert f"`{label}`" in readme, label
