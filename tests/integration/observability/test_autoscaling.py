"""Serve autoscaling of a Tessera model deployment, inside the session's Serve instance: a
second small application (test profile scaletest.yaml) scales up under concurrent load
through a handle and back down when the load stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ray import serve

from tessera.tokenizer.deployment import Detokenizer
from tessera.v1 import common_pb2, tokenizer_pb2

from .conftest import png_b64

pytestmark = pytest.mark.integration

PROFILE = yaml.safe_load((Path(__file__).parent / "scaletest.yaml").read_text())
APP = PROFILE["application"]
DEPLOYMENT = PROFILE["deployment"]
CLIENTS = 8  # concurrent callers: 8 ongoing requests against a target of 1 per replica


def running_replicas() -> int:
    app = serve.status().applications.get(APP)
    if app is None or DEPLOYMENT not in app.deployments:
        return 0
    return app.deployments[DEPLOYMENT].replica_states.get("RUNNING", 0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s} s ({running_replicas()} running)")
        time.sleep(0.25)
    return time.monotonic() - start


@pytest.fixture
def scaletest(stack, http):
    assert DEPLOYMENT == Detokenizer.name
    app = Detokenizer.options(**PROFILE["options"]).bind(str(stack["bundle_dir"]), "cpu")
    serve.run(app, name=APP, route_prefix=None)
    try:
        yield serve.get_app_handle(APP)
    finally:
        serve.delete(APP)


def test_model_deployment_scales_up_under_load_and_back_down(scaletest, http):
    tok = http.post("/v1/tokenize", json={"images": [png_b64(64, (30, 200, 30))] * 4}).json()
    grids = [common_pb2.TokenGrid(**g) for g in tok["grids"]]
    request = tokenizer_pb2.DetokenizeRequest(grids=grids)
    assert len(scaletest.Detokenize.remote(request).result(timeout_s=60).images) == 4
    assert running_replicas() == 1

    stop = threading.Event()
    errors: list[BaseException] = []
    done = [0]

    def client() -> None:
        while not stop.is_set():
            try:
                scaletest.Detokenize.remote(request).result(timeout_s=60)
                done[0] += 1
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        up_s = wait_for(lambda: running_replicas() == 2, 45, "scale up to 2 replicas")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]
    assert done[0] > 0
    down_s = wait_for(lambda: running_replicas() == 1, 45, "scale back down to 1 replica")
    print(f"scaled up in {up_s:.1f} s, down in {down_s:.1f} s after the load stopped")
