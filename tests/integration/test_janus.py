"""An imported Janus snapshot served by the real stack: a second Serve application (`janus`,
under /janus) built by ``tessera.app.build_app`` on the imported bundle, beside the
session's, called through Ray's HTTP and gRPC proxies and the job queue. Its tokens are
``JanusForConditionalGeneration.generate(generation_mode="image")``'s, greedy (top_k=1 on
Tessera's side, do_sample=False on the library's), and its images the library's decode of
them."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from ray import serve

from tessera import registry
from tessera.imports.janus_tiny import CODEBOOK, GRID
from tessera.v1 import (
    decoder_pb2,
    decoder_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    lm_pb2,
    lm_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

pytestmark = [
    pytest.mark.integration,
]

APP = "janus"
METADATA = (("application", APP),)  # two applications: Serve routes gRPC by this key
PROMPT = "a red cat"
GUIDANCE = 5.0
SMALL = {"ray_actor_options": {"num_cpus": 0}, "num_replicas": 1}
# The second app's replicas ask for no logical CPU: the session stack's deployments already
# reserve 1.9 of the 2 (local.yaml), and a replica that does not fit leaves the app pending
# forever (with MixedModel's 0.2 the old 0.05-CPU slivers stopped fitting).
DEPLOYMENTS = (*(entry.service for entry in registry.SERVICES), "Gateway", "JobWorker")


@pytest.fixture(scope="module")
def janus(stack: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from tessera.app import build_app
    from tessera.imports import import_directory
    from tessera.imports.janus_tiny import build_tiny_janus
    from tessera.jobs.embedded import start_redis

    root = tmp_path_factory.mktemp("janus")
    snapshot = build_tiny_janus(root / "Janus-tiny")
    bundle = import_directory(snapshot, root / "janus-tiny")
    redis_url, _ = start_redis(stack["config"].settings())  # the session's, already running
    args = {
        "bundle_dir": str(bundle),
        "device": "cpu",
        "redis_url": redis_url,
        "job_queue": {"prefix": "tessera:janus-jobs"},  # its own queue and workers
    }
    app = build_app(args, {name: SMALL for name in DEPLOYMENTS})
    # Not serve.run: it waits for RUNNING with no limit. Deploy, then wait with one.
    serve.run_many(
        [serve.RunTarget(app, name=APP, route_prefix=f"/{APP}")],
        wait_for_applications_running=False,
    )
    try:
        wait_until_running(APP, timeout_s=240)
        yield {"http": f"{stack['apps_http']}/{APP}", "snapshot": snapshot}
    finally:
        # Always: a half-deployed second app breaks every later gRPC call of the session.
        serve.delete(APP)


def wait_until_running(app: str, timeout_s: float) -> None:
    """Fail fast, with Serve's own reasons, when the app does not come up (a replica that
    cannot be placed waits forever, and pytest's timeout would say nothing useful)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        time.sleep(1.0)
    reasons = {name: d.message for name, d in status.deployments.items()} if status else {}
    pytest.fail(f"app {app!r} not RUNNING after {timeout_s:.0f} s: {reasons}")


@pytest.fixture(scope="module")
def expected(janus: dict) -> dict:
    """The library's greedy tokens for PROMPT and its decoded image, as uint8 pixels."""
    from transformers import AutoTokenizer, JanusForConditionalGeneration

    from tessera.lm.janus import PROMPT_TEMPLATE

    snapshot: Path = janus["snapshot"]
    model = JanusForConditionalGeneration.from_pretrained(snapshot, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
    text = PROMPT_TEMPLATE.replace("{prompt}", PROMPT) + tokenizer.boi_token
    inputs = tokenizer(text, return_tensors="pt")
    tokens = model.generate(
        **inputs, generation_mode="image", do_sample=False, guidance_scale=GUIDANCE
    )
    with torch.no_grad():
        pixels = model.decode_image_tokens(tokens)[0]
    return {"tokens": tokens[0].tolist(), "pixels": ((pixels.clamp(-1, 1) + 1) * 127.5).numpy()}


def assert_library_image(png: bytes, expected: dict) -> None:
    ours = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64)
    assert ours.shape == expected["pixels"].shape
    assert np.abs(ours - expected["pixels"]).max() <= 0.5 + 1e-4  # uint8 rounding only


BODY = {"prompt": PROMPT, "top_k": 1, "guidance_scale": GUIDANCE, "seed": 4}


def test_http_lists_and_generates_the_library_image(janus: dict, expected: dict) -> None:
    with httpx.Client(base_url=janus["http"], timeout=120) as http:
        (model,) = http.get("/v1/models").json()["data"]
        assert (model["id"], model["routes"], model["image_size"]) == ("janus-tiny", ["ar"], 8)
        assert http.get("/readyz").json()["services"] == {
            "tokenizer": "ok",
            "detokenizer": "ok",
            "lm": "ok",
        }
        r = http.post("/v1/images/generations", json=BODY)
        assert r.status_code == 200, r.text
        assert_library_image(base64.b64decode(r.json()["data"][0]["b64_json"]), expected)
        r = http.post("/v1/images/generations", json={**BODY, "route": "unclip"})
        assert r.status_code == 404 and "unclip" in r.json()["error"]["message"]
        r = http.post("/v1/embeddings/text", json={"texts": ["a"]})
        assert r.status_code == 404 and "no 'prior' service" in r.json()["error"]["message"]


@pytest.fixture
def channel(stack: dict) -> Iterator[grpc.Channel]:
    """Where Serve routes gRPC by `application` (the session's Gateway only serves its own)."""
    with grpc.insecure_channel(stack["apps_grpc"]) as ch:
        yield ch


def test_grpc_tokens_stream_and_forwarding(janus: dict, expected: dict, channel) -> None:
    lm = lm_pb2_grpc.LanguageModelServiceStub(channel)
    request = lm_pb2.SampleTokensRequest(prompt=PROMPT, top_k=1, guidance_scale=GUIDANCE)
    reply = lm.SampleTokens(request, metadata=METADATA, timeout=120)
    assert list(reply.grids[0].tokens) == expected["tokens"]

    stub = generation_pb2_grpc.GenerationServiceStub(channel)
    generate = generation_pb2.GenerateRequest(
        prompt=PROMPT, route="ar", top_k=1, guidance_scale=GUIDANCE, seed=4
    )
    events = list(
        stub.GenerateStream(
            generation_pb2.GenerateStreamRequest(request=generate), metadata=METADATA, timeout=120
        )
    )
    assert any(e.HasField("progress") for e in events[:-1])
    assert any(p.png.startswith(b"\x89PNG") for e in events[:-1] for p in e.previews)
    assert_library_image(events[-1].result.images[0].png, expected)

    tokenizer = tokenizer_pb2_grpc.TokenizerServiceStub(channel)
    png = events[-1].result.images[0].png
    tokens = tokenizer.Tokenize(
        tokenizer_pb2.TokenizeRequest(images=[png]), metadata=METADATA, timeout=60
    )  # Janus's VQ encoder, in the Tokenizer deployment
    assert (tokens.grids[0].height, tokens.codebook_size) == (GRID, CODEBOOK)

    decoder = decoder_pb2_grpc.DecoderServiceStub(channel)
    with pytest.raises(grpc.RpcError) as err:
        decoder.SampleLatents(decoder_pb2.SampleLatentsRequest(), metadata=METADATA, timeout=60)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no 'decoder' service" in err.value.details()


def test_a_job_returns_the_library_image(janus: dict, expected: dict) -> None:
    with httpx.Client(base_url=janus["http"], timeout=120) as http:
        r = http.post("/v1/jobs", json=BODY)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 180
        while (job := http.get(f"/v1/jobs/{r.json()['id']}").json())["state"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["state"] == "succeeded", job
        assert_library_image(base64.b64decode(job["result"]["data"][0]["b64_json"]), expected)
