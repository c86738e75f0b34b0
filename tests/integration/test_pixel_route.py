"""The ``pixel`` route through the running stack (the tiny bundle's 4x4 Image Transformer):
HTTP, gRPC (public and the PixelModelService contract), a job with row-by-row previews, the
SDK and the CLI, and 4xx for bad sampling parameters."""

from __future__ import annotations

import base64
import io
import json
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from tessera.common.limits import MAX_PIXEL_TOP_K
from tessera.v1 import generation_pb2, generation_pb2_grpc, pixel_pb2, pixel_pb2_grpc
from tessera_client import Client, InvalidRequest

from .clients.test_cli import REPO, conn_args, tessera

pytestmark = pytest.mark.integration
TIMEOUT = 120
SIDE = 4  # PixelConfig.tiny().image_size: the route's native size in the tiny bundle


def side_of(png: bytes) -> int:
    return Image.open(io.BytesIO(png)).size[0]


def first_final_rgb(png: bytes) -> bytes:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).tobytes()


def test_models_lists_the_route(http):
    assert "pixel" in http.get("/v1/models").json()["data"][0]["routes"]


def test_http_and_grpc_give_the_same_image_and_size_upscales(http, channel):
    body = {"prompt": "a red circle", "route": "pixel", "seed": 7, "n": 2}
    r = http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    pngs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
    assert [side_of(p) for p in pngs] == [SIDE, SIDE] and pngs[0] != pngs[1]
    gen = generation_pb2_grpc.GenerationServiceStub(channel)
    res = gen.Generate(
        generation_pb2.GenerateRequest(prompt="a red circle", route="pixel", seed=7, n=2),
        timeout=TIMEOUT,
    )
    assert res.route == "pixel" and [im.png for im in res.images] == pngs
    big = http.post(
        "/v1/images/generations", json={**body, "n": 1, "size": f"{4 * SIDE}x{4 * SIDE}"}
    )
    assert big.status_code == 200, big.text
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(big.json()["data"][0]["b64_json"]))))
    small = np.asarray(Image.open(io.BytesIO(pngs[0])))
    assert np.array_equal(image[::4, ::4], small)  # nearest-neighbour upscale of the same image
    odd = http.post("/v1/images/generations", json={**body, "size": "6x6"})
    assert odd.status_code == 400


def test_the_contract_streams_rows(channel):
    stub = pixel_pb2_grpc.PixelModelServiceStub(channel)
    req = pixel_pb2.SamplePixelsRequest(prompt="a star", seed=3, guidance_scale=2.0)
    events = list(
        stub.SamplePixelsStream(
            pixel_pb2.SamplePixelsStreamRequest(request=req, stream_every=1), timeout=TIMEOUT
        )
    )
    steps = [e.progress.step for e in events]
    assert steps == [3 * SIDE * k for k in range(1, SIDE + 1)] and events[-1].done
    first = np.asarray(Image.open(io.BytesIO(events[0].images[0].png)))
    assert (first[1:] == 255).all()  # rows not sampled yet are white
    unary = stub.SamplePixels(req, timeout=TIMEOUT)
    assert unary.images[0].png == events[-1].images[0].png and unary.seed == 3
    req.return_pixels = True  # what the route asks for: the same image, raw
    raw = stub.SamplePixels(req, timeout=TIMEOUT)
    assert not raw.images and raw.pixels[0].rgb == first_final_rgb(events[-1].images[0].png)


@pytest.mark.parametrize(
    "bad",
    [
        {"top_k": MAX_PIXEL_TOP_K + 1},
        {"temperature": 0},
        {"temperature": 2.5},
        {"top_p": 0},
        {"guidance_scale": -1},
        {"n": 9},
    ],
)
def test_bad_sampling_parameters_are_400(http, bad):
    r = http.post("/v1/images/generations", json={"prompt": "a cat", "route": "pixel", **bad})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


def test_bad_parameters_over_grpc_are_invalid_argument(channel):
    stub = pixel_pb2_grpc.PixelModelServiceStub(channel)
    for req in (
        pixel_pb2.SamplePixelsRequest(prompt="a", top_k=MAX_PIXEL_TOP_K + 1),
        pixel_pb2.SamplePixelsRequest(prompt="a", n=9),
        pixel_pb2.SamplePixelsRequest(prompt=" "),
        pixel_pb2.SamplePixelsRequest(prompt="a", temperature=3.0),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.SamplePixels(req, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req


def test_job_with_row_previews_matches_the_sync_result(http):
    body = {"prompt": "a blue square", "route": "pixel", "seed": 11}
    job = http.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    events = []
    with http.stream("GET", f"/v1/jobs/{job.json()['id']}/events", timeout=TIMEOUT) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    previews = [e for e in events if e.get("previews")]
    assert previews, events
    deadline = time.monotonic() + TIMEOUT
    while (done := http.get(f"/v1/jobs/{job.json()['id']}").json())["state"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert done["state"] == "succeeded", done
    sync = http.post("/v1/images/generations", json=body).json()
    assert done["result"]["data"][0]["b64_json"] == sync["data"][0]["b64_json"]


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_sdk_and_cli(stack, tmp_path, transport):
    with Client(stack["http"], transport=transport, grpc_target=stack["grpc"]) as client:
        result = client.generate("a tree", route="pixel", seed=5, timeout=TIMEOUT)
        assert result.route == "pixel" and result.images[0].size == (SIDE, SIDE)
        events = list(client.generate_stream("a tree", route="pixel", seed=5, timeout=TIMEOUT))
        assert any(e.previews for e in events[:-1])
        with pytest.raises(InvalidRequest):
            client.generate("a tree", route="pixel", top_k=MAX_PIXEL_TOP_K + 1)
    path = f"{REPO}/services:{REPO}/clients/python"  # this tree's SDK, not an installed one
    run = tessera("generate", "a tree", "-o", "p.png", "--route", "pixel", "--seed", "5",
                  "--size", f"{2 * SIDE}x{2 * SIDE}", *conn_args(stack, transport),
                  cwd=tmp_path, env={"PYTHONPATH": path})  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "p.png").size == (2 * SIDE, 2 * SIDE)
