"""Opt-in: draw docs/monitoring/dashboard.png from a real run.

    TESSERA_RENDER_DASHBOARD=docs/monitoring/dashboard.png \\
        .venv/bin/python -m pytest tests/integration/observability -k render -s

drives mixed traffic (both routes over HTTP and gRPC, the component endpoints, bad requests,
bursts of jobs at both priorities) at the session stack for TESSERA_RENDER_SECONDS (120),
then renders every panel from the test's Prometheus with scripts/render_dashboard.py."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path

import pytest

from .conftest import REPO, drive_traffic, wait_job

pytestmark = pytest.mark.integration
OUT = os.environ.get("TESSERA_RENDER_DASHBOARD")
SECONDS = float(os.environ.get("TESSERA_RENDER_SECONDS", "120"))


def load_renderer():
    spec = importlib.util.spec_from_file_location(
        "render_dashboard", REPO / "scripts" / "render_dashboard.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not OUT, reason="set TESSERA_RENDER_DASHBOARD=<png> to render the dashboard")
def test_render_dashboard_png(prometheus, http, channel):
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop(body) -> None:
        i = 0
        while not stop.is_set():
            try:
                body(i)
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            i += 1

    def rounds(i: int) -> None:
        drive_traffic(http, channel, seed=i)

    def generations(i: int) -> None:
        route = ("ar", "unclip")[i % 2]
        body = {"prompt": "a green tree", "route": route, "n": 1 + i % 3, "seed": i}
        assert http.post("/v1/images/generations", json=body).status_code == 200

    def job_bursts(i: int) -> None:
        bodies = [
            {"prompt": "a star", "route": ("ar", "unclip")[k % 2], "seed": 100 * i + k}
            for k in range(4)
        ]
        bodies.append({"prompt": "a sun", "seed": i, "priority": "high"})
        ids = [http.post("/v1/jobs", json=body).json()["id"] for body in bodies]
        for job_id in ids:
            wait_job(http, job_id, timeout_s=300)
        stop.wait(10)

    threads = [
        threading.Thread(target=loop, args=(f,), daemon=True)
        for f in (rounds, generations, job_bursts)
    ]
    for t in threads:
        t.start()
    stop.wait(SECONDS)
    stop.set()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    time.sleep(15)  # Ray's export lag: let the last requests reach Prometheus
    minutes = (time.time() - prometheus.started) / 60
    out = load_renderer().render(
        prometheus.url, Path(OUT), minutes=minutes, rate_interval="30s", include_gpu=False
    )
    assert out.stat().st_size > 20_000
    print(f"wrote {out} ({minutes:.1f} min of data)")
