"""One Ray Serve instance for the whole test session, on free ports, serving a tiny
random-init bundle through the same `tessera.runtime.start` that `tessera serve` uses."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import grpc
import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bundle.random_init import build_random_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    build_random_bundle(out, "tiny", tiny=True, seed=0)
    return out


@pytest.fixture(scope="session")
def kandinsky(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random Kandinsky 2.2 pair built with diffusers (its library layout) and the
    bundle `tessera models import` writes for it; the stack serves it beside the tiny
    bundle (``args.extra_bundles``)."""
    from tessera.imports import import_directory
    from tessera.imports.kandinsky_tiny import build

    root = tmp_path_factory.mktemp("kandinsky")
    build(root / "src")
    bundle = import_directory(root / "src", root / "kandinsky-tiny")
    return {"src": root / "src", "bundle": bundle, "name": "kandinsky-tiny"}


@pytest.fixture(scope="session")
def stack(tiny_bundle: Path, request: pytest.FixtureRequest) -> dict:
    from tessera import runtime

    # The imported Kandinsky bundle rides along only when a test of it is collected (its
    # four services cost the session ~a minute to build and load).
    served = any("test_kandinsky_served" in item.nodeid for item in request.session.items)
    kandinsky = request.getfixturevalue("kandinsky") if served else None
    extra = {"extra_bundles": [str(kandinsky["bundle"])]} if kandinsky else {}
    temp_dir = tempfile.mkdtemp(prefix="tessera-test-ray-")
    config = runtime.StackConfig(
        serve_config=REPO / "deploy" / "serve" / "local.yaml",
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        app_args={"bundle_dir": str(tiny_bundle), "device": "cpu", **extra},
        num_cpus=3 if kandinsky else 2,  # logical: room for the Kandinsky bundle's services
        # Not under pytest's basetemp: pytest prunes old basetemps, which would pull Ray's
        # session directory from under a long run.
        temp_dir=temp_dir,
        data_dir=Path(temp_dir) / "data",  # the embedded Redis of this session
        quiet=True,
        # The settings' ingress, as `tessera serve` (direct by default): room for the apps
        # some tests deploy beside `tessera` (job worker, autoscaling, API key, Janus).
        other_apps=4,
    )
    endpoints = runtime.start(config)
    # Where every app of the session's Serve instance answers by route prefix (and gRPC by
    # its `application` metadata): Serve's proxy, on the public ports or (direct ingress)
    # as the fallback on ports of its own.
    yield {
        **endpoints,
        "apps_http": endpoints.get("proxy_http", endpoints["http"]),
        "apps_grpc": endpoints.get("proxy_grpc", endpoints["grpc"]),
        "bundle_dir": tiny_bundle,
        "config": config,
        "kandinsky": kandinsky,
    }
    runtime.stop()
    shutil.rmtree(config.temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def http(stack: dict) -> httpx.Client:
    with httpx.Client(base_url=stack["http"], timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def channel(stack: dict) -> grpc.Channel:
    with grpc.insecure_channel(stack["grpc"]) as ch:
        yield ch
