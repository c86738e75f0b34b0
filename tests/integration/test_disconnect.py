"""A synchronous generation whose caller goes away stops its work: the engine rows its
request holds in the LanguageModel (every ar candidate) or the Decoder are freed at the
engine's next steps, not when the work would have finished.

Several long requests are sent at once so that the engine has far more steps of work queued
than it can run while the test watches (``stats()`` on the engine-backed deployments: running
rows, waiting jobs, steps run). The callers then go away (HTTP: the connection is closed;
gRPC: the call is cancelled) and the engine must be idle long before the work it had queued
would have finished. How many steps it still runs is the cancellation's latency (proxy ->
gateway -> model replica while the engine keeps stepping): 1-2 steps on an idle machine, 27
once on a loaded CI machine, so the bound is relative to the work left, not a step count."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlparse

import pytest
from ray import serve

from tessera.v1 import generation_pb2, generation_pb2_grpc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# concurrent requests per route: many waves of the engine's max_rows, so that far more steps
# are queued than the cancellation takes to arrive (the tiny LM's wave is only 16 steps, and
# since ar requests go straight to the LM (no EmbedText hop before it) 32 callers' 256 steps
# could all run within the 0.3 s the test waits before it closes)
CALLERS = {"unclip": 8, "ar": 64}


def stats(deployment: str) -> dict:
    handle = serve.get_deployment_handle(deployment, app_name="tessera")
    return handle.stats.remote().result(timeout_s=60)


def wait_for(deployment: str, busy: bool, timeout: float) -> dict:
    """Poll ``stats`` until the engine is busy (rows running) or idle (nothing running or
    waiting); the last stats."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(deployment)
        idle = s["running_rows"] == 0 and s["waiting"] == 0
        if (busy and s["running_rows"] > 0) or (not busy and idle):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"{deployment} not {'busy' if busy else 'idle'}: {s}")
        time.sleep(0.02)


def decoder_steps(stack) -> int:
    config = json.loads((stack["bundle_dir"] / "decoder" / "config.json").read_text())
    return int(config["num_train_timesteps"])  # the most the bundle allows


def bodies(stack, route: str) -> dict:
    if route == "unclip":  # every image: the decoder's most steps, guided (2 rows each)
        return {"prompt": "a red circle", "route": "unclip", "n": 4, "steps": decoder_steps(stack)}
    # ar: 4 images x 8 candidates = 32 LM sequences (64 guided rows) per request
    return {"prompt": "a red circle", "route": "ar", "n": 4, "candidates": 8}


ENGINE = {"unclip": "Decoder", "ar": "LanguageModel"}


def assert_stops(deployment: str, before: dict, at_close: dict, after: dict, work: int) -> None:
    ran_after = after["steps"] - at_close["steps"]
    left_at_close = work - (at_close["steps"] - before["steps"])
    print(
        f"{deployment}: {at_close} at close, {after} idle; "
        f"{ran_after} of {left_at_close} queued steps ran after close"
    )
    # without cancellation every queued step would run; with it, only the steps the engine
    # takes while the cancel travels to it
    assert left_at_close > 0 and ran_after < left_at_close / 2, (before, at_close, after, work)


@pytest.mark.parametrize("route", ["unclip", "ar"])
def test_http_disconnect_frees_the_engine_rows(stack, route):
    deployment = ENGINE[route]
    wait_for(deployment, busy=False, timeout=120)
    before = stats(deployment)
    url = urlparse(stack["http"])
    body = json.dumps(bodies(stack, route)).encode()
    head = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: {url.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sockets = []
    for _ in range(CALLERS[route]):
        s = socket.create_connection((url.hostname, url.port), timeout=30)
        s.sendall(head + body)
        sockets.append(s)
    try:
        wait_for(deployment, busy=True, timeout=120)
        time.sleep(0.3)  # let every request reach the engine
        at_close = stats(deployment)
    finally:
        for s in sockets:
            s.close()  # the caller goes away
    after = wait_for(deployment, busy=False, timeout=30)
    assert_stops(deployment, before, at_close, after, _work(stack, route))


@pytest.mark.parametrize("route", ["unclip", "ar"])
def test_grpc_cancel_frees_the_engine_rows(stack, channel, route):
    deployment = ENGINE[route]
    wait_for(deployment, busy=False, timeout=120)
    before = stats(deployment)
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    req = generation_pb2.GenerateRequest(**bodies(stack, route))
    calls = [stub.Generate.future(req, timeout=300) for _ in range(CALLERS[route])]
    try:
        wait_for(deployment, busy=True, timeout=120)
        time.sleep(0.3)
        at_close = stats(deployment)
    finally:
        for call in calls:
            call.cancel()  # the caller goes away
    after = wait_for(deployment, busy=False, timeout=30)
    assert_stops(deployment, before, at_close, after, _work(stack, route))
    assert all(c.cancelled() or c.done() for c in calls)


def _work(stack, route: str) -> int:
    """Engine steps the route's CALLERS requests need: waves of max_rows, each wave as many steps as
    one request (decoder: its steps; LM: one per grid token)."""
    if route == "unclip":
        rows, max_rows, steps = 4 * 2, 32, decoder_steps(stack)
    else:
        grid = json.loads((stack["bundle_dir"] / "lm" / "config.json").read_text())["grid_size"]
        rows, max_rows, steps = 4 * 8 * 2, 128, grid * grid
    waves = -(-(CALLERS[route] * rows) // max_rows)
    return waves * steps
