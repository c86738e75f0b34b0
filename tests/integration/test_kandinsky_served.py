"""An imported Kandinsky 2.2 bundle served beside the session's tiny bundle (its own Prior,
Decoder, Tokenizer and Detokenizer deployments, picked by ``model``): over HTTP, gRPC and a
job, the images equal diffusers' own pipelines' on the same checkpoint and seeds."""

from __future__ import annotations

import base64
import time

import pytest

from tessera.imports.kandinsky_tiny import max_pixel_error, reference_images
from tessera.v1 import generation_pb2, generation_pb2_grpc

pytestmark = pytest.mark.integration

PROMPT = "a blue square"
ONE_LEVEL = 1.01 / 255
SETTINGS = {"seed": 3, "steps": 3, "guidance_scale": 4.0}


@pytest.fixture(scope="module")
def reference(stack: dict):
    src = stack["kandinsky"]["src"]
    return reference_images(src, PROMPT, n=1, seed=3, steps=3, guidance=4.0)[0]


def test_models_lists_every_bundle(http, stack: dict) -> None:
    models = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    kandinsky = models[stack["kandinsky"]["name"]]
    assert kandinsky["family"] == "kandinsky22" and kandinsky["routes"] == ["unclip"]
    assert kandinsky["image_size"] == 64
    assert any(m["family"] == "tessera" for m in models.values())
    ready = http.get("/readyz").json()
    assert ready["services"][f"decoder@{stack['kandinsky']['name']}"] == "ok"
    assert f"lm@{stack['kandinsky']['name']}" not in ready["services"]


def test_http_matches_diffusers(http, stack: dict, reference) -> None:
    body = {"prompt": PROMPT, "route": "unclip", "model": stack["kandinsky"]["name"], **SETTINGS}
    r = http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    png = base64.b64decode(r.json()["data"][0]["b64_json"])
    assert max_pixel_error(png, reference) <= ONE_LEVEL
    ar = http.post("/v1/images/generations", json={**body, "route": "ar"})
    assert ar.status_code == 404 and "ar" in ar.json()["error"]["message"]


def test_grpc_and_stream_match_diffusers(channel, stack: dict, reference) -> None:
    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    req = generation_pb2.GenerateRequest(
        prompt=PROMPT, route="unclip", model=stack["kandinsky"]["name"], **SETTINGS
    )
    res = stub.Generate(req, timeout=120)
    assert res.model == stack["kandinsky"]["name"]
    assert max_pixel_error(res.images[0].png, reference) <= ONE_LEVEL
    events = list(
        stub.GenerateStream(generation_pb2.GenerateStreamRequest(request=req), timeout=120)
    )
    assert any(e.previews for e in events)
    assert max_pixel_error(events[-1].result.images[0].png, reference) <= ONE_LEVEL
    listed = stub.ListModels(generation_pb2.ListModelsRequest(), timeout=30)
    assert stack["kandinsky"]["name"] in {m.id for m in listed.models}


def test_job_matches_diffusers(http, stack: dict, reference) -> None:
    body = {"prompt": PROMPT, "route": "unclip", "model": stack["kandinsky"]["name"], **SETTINGS}
    r = http.post("/v1/jobs", json=body)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while (job := http.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in (
        "succeeded",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["state"] == "succeeded", job
    png = base64.b64decode(job["result"]["data"][0]["b64_json"])
    assert max_pixel_error(png, reference) <= ONE_LEVEL
