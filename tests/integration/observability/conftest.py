"""A real Prometheus (Debian's binary) scraping the session stack, and traffic that touches
every panel of the Tessera dashboard."""

from __future__ import annotations

import base64
import io
import shutil
import socket
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
import yaml
from PIL import Image

from tessera.v1 import generation_pb2, generation_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "tessera.json"
LOCAL_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.local.yml"
RULES = REPO / "deploy" / "prometheus" / "rules" / "tessera.rules.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_config(metrics_port: int, prometheus_port: int) -> dict:
    """The shipped single-machine config, pointed at the test stack and scraping every second
    (Ray's own export lags by several seconds; a 10 s scrape would add to that)."""
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["tessera"]["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    jobs["prometheus"]["static_configs"] = [{"targets": [f"127.0.0.1:{prometheus_port}"]}]
    return config


class Prometheus:
    """A Prometheus server in a temp dir; :meth:`query` runs an instant query."""

    def __init__(self, binary: str, metrics_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.started = time.time()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(metrics_port, self.port)))
        self.log = workdir / "prometheus.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if self.client.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready in {timeout_s} s: {self.log.read_text()[-2000:]}")

    def api(self, path: str, **params: str) -> dict:
        r = self.client.get(f"/api/v1/{path}", params=params)
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def prometheus(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Prometheus:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's `prometheus` is not installed (apt-get install prometheus)")
    server = Prometheus(binary, stack["config"].metrics_port, tmp_path_factory.mktemp("prom"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def png_b64(side: int, color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s")


def drive_traffic(http: httpx.Client, channel: grpc.Channel, *, seed: int = 0) -> None:
    """One round of requests that feeds every panel: both routes over HTTP and gRPC
    (images, batches, LM tokens, denoising steps, latency), variations, the component
    endpoints, failed requests (errors by route/status/component) and a job (queue depth,
    outcomes, time in queue). Asserts only what the traffic itself needs."""
    side = http.get("/v1/models").json()["data"][0]["image_size"]
    job = http.post("/v1/jobs", json={"prompt": "a red circle", "route": "unclip", "seed": seed})
    assert job.status_code == 202, job.text
    for route in ("ar", "unclip"):
        r = http.post(
            "/v1/images/generations",
            json={"prompt": "a blue square", "route": route, "n": 2, "seed": seed},
        )
        assert r.status_code == 200, r.text
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    for route in ("ar", "unclip"):
        req = generation_pb2.GenerateRequest(prompt="a tree", route=route, seed=seed)
        assert stub.Generate(req, timeout=120).images
    r = http.post(
        "/v1/images/variations",
        files={"image": ("x.png", base64.b64decode(png_b64(side, (200, 30, 30))), "image/png")},
        data={"n": "1", "seed": str(seed)},
    )
    assert r.status_code == 200, r.text
    tok = http.post("/v1/tokenize", json={"images": [png_b64(side, (30, 200, 30))]})
    assert tok.status_code == 200, tok.text
    det = http.post("/v1/detokenize", json={"grids": tok.json()["grids"]})
    assert det.status_code == 200, det.text
    assert http.post("/v1/embeddings/text", json={"texts": ["a dog"]}).status_code == 200
    # Failed requests: bad input reaching a handler (invalid_argument) and an unknown model.
    assert http.post("/v1/tokenize", json={"images": ["not base64!!"]}).status_code == 400
    bad = {"prompt": "a", "model": "no-such-model"}
    assert http.post("/v1/images/generations", json=bad).status_code == 404
    assert wait_job(http, job.json()["id"])["state"] == "succeeded"
