"""The mixed-modal model through the running stack (the tiny bundle's random mixed model):
its MixedModelService contract over gRPC (a mask keeps every token outside it, captions with
scores, the stream), the ``mixed`` route over HTTP, gRPC and a job with previews, edits and
captions through the route code over Serve handles, and INVALID_ARGUMENT / 400 for bad input."""

from __future__ import annotations

import base64
import io
import json
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from tessera.common.errors import InvalidArgument
from tessera.common.images import editable_cells, mask_alpha
from tessera.v1 import (
    generation_pb2,
    generation_pb2_grpc,
    mixed_pb2,
    mixed_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

pytestmark = pytest.mark.integration
TIMEOUT = 120
SIDE, GRID = 16, 4  # the tiny tokenizer: 16px images, a 4x4 grid of 4px patches


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


SOURCE = png(np.random.default_rng(1).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))


def mask_png() -> bytes:
    rgba = np.full((SIDE, SIDE, 4), 255, np.uint8)
    rgba[4:12, 8:12, 3] = 0  # cells (1, 2) and (2, 2) may change
    return png(rgba)


@pytest.fixture(scope="module")
def source_grid(channel):
    stub = tokenizer_pb2_grpc.TokenizerServiceStub(channel)
    res = stub.Tokenize(tokenizer_pb2.TokenizeRequest(images=[SOURCE]), timeout=TIMEOUT)
    return res.grids[0]


def test_models_lists_the_route(http):
    assert "mixed" in http.get("/v1/models").json()["data"][0]["routes"]


def test_a_masked_edit_over_grpc_keeps_every_token_outside_the_mask(channel, source_grid):
    editable = editable_cells(mask_alpha(mask_png(), SIDE), GRID)
    assert sum(editable) == 2
    stub = mixed_pb2_grpc.MixedModelServiceStub(channel)
    req = mixed_pb2.EditGridsRequest(
        source=source_grid, instruction="make the circle red", n=4, seed=2, temperature=2.0,
        editable=editable,
    )  # fmt: skip
    res = stub.EditGrids(req, timeout=TIMEOUT)
    assert res.seed == 2 and len(res.grids) == 4
    for grid in res.grids:
        kept = [t for t, e in zip(grid.tokens, editable, strict=True) if not e]
        assert kept == [s for s, e in zip(source_grid.tokens, editable, strict=True) if not e]
    events = list(
        stub.EditGridsStream(
            mixed_pb2.EditGridsStreamRequest(request=req, stream_every=4), timeout=TIMEOUT
        )
    )
    assert events[-1].done and [e.progress.step for e in events] == [4, 8, 12, 16]
    assert [g.tokens for g in events[-1].grids] == [g.tokens for g in res.grids]


def test_captions_over_grpc_are_sorted_by_score(channel, source_grid):
    stub = mixed_pb2_grpc.MixedModelServiceStub(channel)
    res = stub.CaptionGrids(
        mixed_pb2.CaptionGridsRequest(grid=source_grid, n=3, temperature=1.0, seed=4),
        timeout=TIMEOUT,
    )
    scores = [c.score for c in res.captions]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and max(scores) <= 0


def test_bad_contract_requests_are_invalid_argument(channel, source_grid):
    stub = mixed_pb2_grpc.MixedModelServiceStub(channel)
    for method, req in (
        (stub.EditGrids, mixed_pb2.EditGridsRequest(source=source_grid, instruction=" ")),
        (stub.EditGrids, mixed_pb2.EditGridsRequest(source=source_grid, instruction="x",
                                                    editable=[True] * 3)),
        (stub.EditGrids, mixed_pb2.EditGridsRequest(instruction="x")),  # no source grid
        (stub.GenerateGrids, mixed_pb2.GenerateGridsRequest(prompt="x", top_k=10**6)),
        (stub.CaptionGrids, mixed_pb2.CaptionGridsRequest(grid=source_grid, n=2)),
        (stub.CaptionGrids, mixed_pb2.CaptionGridsRequest(grid=source_grid, temperature=1e-30)),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as err:
            method(req, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req


def test_the_route_over_http_and_grpc_gives_the_same_images(http, channel):
    body = {"prompt": "a red circle", "route": "mixed", "seed": 7, "n": 2}
    r = http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    pngs = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
    gen = generation_pb2_grpc.GenerationServiceStub(channel)
    res = gen.Generate(
        generation_pb2.GenerateRequest(prompt="a red circle", route="mixed", seed=7, n=2),
        timeout=TIMEOUT,
    )
    assert res.route == "mixed" and [im.png for im in res.images] == pngs
    for bad in ({"top_p": 0.5}, {"candidates": 2}, {"top_k": 65}):
        r = http.post("/v1/images/generations", json={**body, **bad})
        assert r.status_code == 400, (bad, r.text)


def test_a_job_on_the_route_streams_previews_and_matches_the_sync_result(http):
    body = {"prompt": "a blue square", "route": "mixed", "seed": 11}
    job = http.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    events = []
    with http.stream("GET", f"/v1/jobs/{job.json()['id']}/events", timeout=TIMEOUT) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert [e for e in events if e.get("previews")], events
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


@pytest.fixture(scope="module")
def served_pipelines(stack):
    from ray import serve

    from tessera.routes.bundle import BundleInfo
    from tessera.routes.handles import ModelHandles
    from tessera.routes.pipelines import Pipelines

    names = {"tokenizer": "Tokenizer", "detokenizer": "Detokenizer", "mixed": "MixedModel"}
    handles = {k: serve.get_deployment_handle(v, app_name="tessera") for k, v in names.items()}
    return Pipelines(ModelHandles(**handles), BundleInfo.read(stack["bundle_dir"]))


async def test_edits_and_captions_through_the_route_code_over_serve_handles(served_pipelines):
    from tessera.routes.schemas import CaptionParams, EditParams

    events = []

    async def on_event(event):
        events.append(event)
        return True

    params = EditParams(prompt="make the circle red", n=2, seed=5, size=f"{2 * SIDE}x{2 * SIDE}")
    res = await served_pipelines.edit(SOURCE, params, mask_png(), on_event)
    assert res.route == "edit" and res.seed == 5 and len(res.images) == 2
    assert {(im.width, im.height) for im in res.images} == {(2 * SIDE, 2 * SIDE)}
    assert events and all(len(e.previews) == 2 for e in events)
    captions = await served_pipelines.caption(SOURCE, CaptionParams(n=2, temperature=1.0))
    assert len(captions) == 2 and captions[0].score >= captions[1].score
    with pytest.raises(InvalidArgument, match="mask is 8x8"):
        await served_pipelines.edit(SOURCE, params, png(np.zeros((8, 8, 4), np.uint8)))
