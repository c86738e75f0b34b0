"""`tessera serve --ingress direct|proxy` end to end, once per kind: with `direct` (the default)
the Gateway replica binds the public HTTP and gRPC ports itself (Serve's direct ingress); with
`proxy` Serve's proxy actor takes them. Each its own stack, in a subprocess: the Ray Serve
settings an ingress needs are read when Serve's processes start, so the session's stack (the
default kind) cannot switch."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import get_args

import grpc
import httpx
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from tessera.common.settings import Ingress
from tessera.v1 import generation_pb2, generation_pb2_grpc
from tests.integration.conftest import REPO, free_port

pytestmark = pytest.mark.integration
START_S = 240
TIMEOUT = 120
RESTART_S = 90  # Serve notices a dead replica within seconds and starts another
GATEWAY_TITLE = "ray::ServeReplica:tessera:Gateway"


@pytest.fixture(scope="module", params=get_args(Ingress))
def served(
    request: pytest.FixtureRequest, tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    data = tmp_path_factory.mktemp(f"{request.param}-data")
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    env = {**os.environ, "TESSERA_DATA_DIR": str(data), "PYTHONPATH": "services"}
    cmd = [sys.executable, "-m", "tessera.cli", "serve", "--ingress", request.param]
    cmd += ["--bundle-dir", str(tiny_bundle), "--http-port", str(ports["http"])]
    cmd += ["--grpc-port", str(ports["grpc"]), "--metrics-port", str(ports["metrics"])]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:  # keep the pipe drained for the whole life of the stack
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Tessera is ready"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(START_S):
            pytest.fail(f"the {request.param} stack did not start:\n" + "".join(lines[-40:]))
        yield {
            "http": f"http://127.0.0.1:{ports['http']}",
            "grpc": f"127.0.0.1:{ports['grpc']}",
            "proc": proc,
            "lines": lines,
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_http_generates_and_rejects_bad_input_on_the_public_port(served):
    with httpx.Client(base_url=served["http"], timeout=TIMEOUT) as http:
        assert http.get("/healthz").status_code == 200
        res = http.post("/v1/images/generations", json={"prompt": "a red circle", "seed": 3})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["route"] == "ar" and len(body["data"]) == 1
        image = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
        assert image.format == "PNG"
        again = http.post("/v1/images/generations", json={"prompt": "a red circle", "seed": 3})
        assert again.json()["data"] == body["data"]  # same seed, same image
        bad = http.post("/v1/images/generations", json={"prompt": "", "n": 1})
        assert bad.status_code == 400 and bad.json()["error"]["message"], bad.text


def test_grpc_generates_with_health_and_reflection_on_the_public_port(served):
    with grpc.insecure_channel(served["grpc"]) as channel:
        gen = generation_pb2_grpc.GenerationServiceStub(channel)
        res = gen.Generate(
            generation_pb2.GenerateRequest(prompt="a tree", route="unclip", seed=7),
            timeout=TIMEOUT,
        )
        assert res.route == "unclip" and len(res.images) == 1
        with pytest.raises(grpc.RpcError) as err:
            gen.Generate(generation_pb2.GenerateRequest(prompt=""), timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        listed = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
        )
        names = {s.name for r in listed for s in r.list_services_response.service}
        assert "tessera.v1.GenerationService" in names


def test_the_bench_pairs_the_stack_with_in_process(served, tiny_bundle):
    """`make bench` pairs both kinds of stack with in-process requests the same way."""
    from benchmarks.run import ROUTES, paired_latency

    result = paired_latency(tiny_bundle, served["http"], repeats=2, grpc_target=served["grpc"])
    for side in ("in_process", "served", "served_grpc"):
        for route in ROUTES:
            assert result[side][route]["n"] == 2 and result[side][route]["min"] > 0


def test_a_crashed_gateway_comes_back_on_the_same_ports(served):
    """Kill the Gateway replica's process: Serve starts another, which answers on the public
    ports again (under direct ingress it binds them itself, so the port must not sit in
    Serve's quarantine)."""
    stack = psutil.Process(served["proc"].pid).children(recursive=True)
    titles = {p: " ".join(p.cmdline()) for p in stack if p.is_running()}
    (gateway,) = [p for p, title in titles.items() if title.startswith(GATEWAY_TITLE)]
    gateway.kill()
    gateway.wait(30)
    deadline, answered = time.monotonic() + RESTART_S, False
    while not answered and time.monotonic() < deadline:
        try:
            answered = httpx.get(served["http"] + "/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            pass
        if not answered:
            time.sleep(1)
    assert answered, f"no answer {RESTART_S} s after the Gateway was killed"
    with httpx.Client(base_url=served["http"], timeout=TIMEOUT) as http:
        res = http.post("/v1/images/generations", json={"prompt": "a red circle", "seed": 3})
        assert res.status_code == 200, res.text
    with grpc.insecure_channel(served["grpc"]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_ctrl_c_stops_the_stack(served):  # last: the stack is gone after it
    proc = served["proc"]
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 0, "".join(served["lines"][-40:])
    stopped_s = time.monotonic() - started
    assert stopped_s < 60, f"took {stopped_s:.0f} s"
    with pytest.raises(httpx.TransportError):
        httpx.get(served["http"] + "/healthz", timeout=5)
