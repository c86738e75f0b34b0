"""Edits and captions (the mixed-modal model) through the running stack: HTTP (and the
unmodified ``openai`` client), gRPC, async jobs, and 400 / INVALID_ARGUMENT for bad input."""

from __future__ import annotations

import base64
import io
import json

import grpc
import numpy as np
import pytest
from PIL import Image

from tessera.common.limits import MAX_IMAGE_BYTES
from tessera.v1 import generation_pb2, generation_pb2_grpc

from .test_jobs_api import wait_done

pytestmark = pytest.mark.integration
TIMEOUT = 120


def png(side: int, color: tuple[int, ...] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


def scene(side: int) -> bytes:
    """A red circle on white, the kind of picture the shapes data has."""
    img = Image.new("RGB", (side, side), (255, 255, 255))
    from PIL import ImageDraw

    ImageDraw.Draw(img).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), (220, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def pixels(data: bytes | str) -> np.ndarray:
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


@pytest.fixture(scope="module")
def model(http) -> dict:
    return http.get("/v1/models").json()["data"][0]


@pytest.fixture(scope="module")
def native(model) -> int:
    return model["image_size"]


@pytest.fixture(scope="module")
def mixed(model) -> None:
    """The session's tiny bundle has a mixed component (edits and captions served)."""
    assert model["edits"] is True and model["captions"] is True, model
    assert "mixed" in model["routes"]


@pytest.fixture(scope="module")
def gen(channel):
    return generation_pb2_grpc.GenerationServiceStub(channel)


def edit_form(image: bytes, prompt: str, mask: bytes | None = None, **fields) -> dict:
    files = {"image": ("in.png", image, "image/png")}
    if mask is not None:
        files["mask"] = ("mask.png", mask, "image/png")
    return {"files": files, "data": {"prompt": prompt, **{k: str(v) for k, v in fields.items()}}}


# ---------------------------------------------------------------- HTTP
def test_edit_returns_native_pngs_deterministic_by_seed(http, native, mixed):
    form = edit_form(scene(native), "make the circle blue", n=2, seed=11)
    r = http.post("/v1/images/edits", **form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 11 and len(body["data"]) == 2 and body["route"] == "edit"
    assert all(pixels(d["b64_json"]).shape == (native, native, 3) for d in body["data"])
    again = http.post("/v1/images/edits", **form).json()
    assert [d["b64_json"] for d in again["data"]] == [d["b64_json"] for d in body["data"]]
    up = http.post(
        "/v1/images/edits",
        **edit_form(scene(native), "make the circle blue", size=f"{2 * native}x{2 * native}"),
    )
    assert up.status_code == 200, up.text
    assert pixels(up.json()["data"][0]["b64_json"]).shape == (2 * native, 2 * native, 3)


def test_opaque_mask_keeps_every_token_of_the_source(http, native, mixed):
    """A mask with no transparent pixel lets no cell change: the edit is the source's own
    tokens decoded, exactly what /v1/tokenize then /v1/detokenize give."""
    source = scene(native)
    opaque = png(native, (0, 0, 0, 255), "RGBA")
    r = http.post("/v1/images/edits", **edit_form(source, "remove the circle", opaque, seed=3))
    assert r.status_code == 200, r.text
    grids = http.post(
        "/v1/tokenize", json={"images": [base64.b64encode(source).decode()], "resize": False}
    ).json()["grids"]
    decoded = http.post("/v1/detokenize", json={"grids": grids}).json()["data"][0]["b64_json"]
    np.testing.assert_array_equal(pixels(r.json()["data"][0]["b64_json"]), pixels(decoded))


def test_unmodified_openai_client_edits(stack, native, mixed):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=stack["http"] + "/v1", api_key="unused", max_retries=0)
    clear = png(native, (0, 0, 0, 0), "RGBA")  # every pixel may change
    res = client.images.edit(
        image=("in.png", scene(native), "image/png"),
        prompt="make the circle green",
        mask=("mask.png", clear, "image/png"),
        n=2,
        response_format="b64_json",
    )
    assert len(res.data) == 2
    assert all(pixels(d.b64_json).shape == (native, native, 3) for d in res.data)
    one = client.images.edit(image=("in.png", scene(native), "image/png"), prompt="remove it")
    assert pixels(one.data[0].b64_json).shape == (native, native, 3)


def test_captions_best_first_with_scores(http, native, mixed):
    files = {"image": ("in.png", scene(native), "image/png")}
    r = http.post("/v1/images/captions", files=files, data={"n": "3", "temperature": "1.0"})
    assert r.status_code == 200, r.text
    captions = r.json()["captions"]
    assert len(captions) == 3 and all(isinstance(c["text"], str) for c in captions)
    scores = [c["score"] for c in captions]
    assert scores == sorted(scores, reverse=True) and all(s <= 0 for s in scores)
    greedy = [http.post("/v1/images/captions", files=files).json() for _ in range(2)]
    assert greedy[0]["captions"] == greedy[1]["captions"] and len(greedy[0]["captions"]) == 1


def test_mixed_route_generates(http, native, mixed):
    body = {"prompt": "a red circle", "route": "mixed", "n": 2, "seed": 4}
    r = http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["route"] == "mixed" and len(r.json()["data"]) == 2
    assert pixels(r.json()["data"][0]["b64_json"]).shape == (native, native, 3)


def bad_edits(native: int) -> list[tuple[str, dict, str]]:
    jpeg = io.BytesIO()
    Image.new("RGB", (native, native)).save(jpeg, format="JPEG")
    good = scene(native)
    return [
        ("not a png", edit_form(jpeg.getvalue(), "make it red"), "png"),
        ("wrong size", edit_form(png(native * 2), "make it red"), f"{2 * native}x{2 * native}"),
        ("mask size", edit_form(good, "make it red", png(native // 2, mode="RGBA")), "mask"),
        ("mask not png", edit_form(good, "make it red", b"GIF89a not a mask"), "mask"),
        ("empty prompt", edit_form(good, ""), "prompt"),
        ("blank prompt", edit_form(good, "   "), "blank"),
        ("oversize", edit_form(b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_BYTES), "x"), "limit"),
        ("n", edit_form(good, "make it red", n=5), "n"),
        ("guidance", edit_form(good, "make it red", image_guidance_scale=-1), "guidance"),
    ]


def test_bad_edits_answer_400_with_a_message(http, native, mixed):
    for name, form, word in bad_edits(native):
        r = http.post("/v1/images/edits", **form)
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert word in r.json()["error"]["message"].lower(), (name, r.text)
    r = http.post("/v1/images/edits", data={"prompt": "make it red"})  # no image
    assert r.status_code == 400 and "image" in r.text
    files = {"image": ("in.png", scene(native), "image/png")}
    r = http.post("/v1/images/captions", files=files, data={"n": "2"})  # greedy n > 1
    assert r.status_code == 400 and "temperature" in r.json()["error"]["message"]
    r = http.post("/v1/images/captions", files={"image": ("x.png", b"nope", "image/png")})
    assert r.status_code == 400
    # a positive temperature under the floor (it would overflow the softmax) is refused
    r = http.post("/v1/images/captions", files=files, data={"temperature": "1e-30"})
    assert r.status_code == 400 and "0 (greedy) or at least 0.01" in r.text
    r = http.post("/v1/images/captions", files=files, data={"n": "2", "temperature": "0.01"})
    assert r.status_code == 200 and len(r.json()["captions"]) == 2, r.text


# ---------------------------------------------------------------- gRPC
def test_grpc_edit_stream_and_caption(gen, http, native, mixed):
    req = generation_pb2.EditRequest(image=scene(native), prompt="make the circle blue", seed=11)
    res = gen.Edit(req, timeout=TIMEOUT).result
    assert len(res.images) == 1 and res.seed == 11
    sync = http.post(
        "/v1/images/edits", **edit_form(scene(native), "make the circle blue", seed=11)
    )
    assert res.images[0].png == base64.b64decode(sync.json()["data"][0]["b64_json"])
    events = list(gen.EditStream(generation_pb2.EditStreamRequest(request=req), timeout=TIMEOUT))
    assert events[-1].HasField("result") and not any(e.HasField("result") for e in events[:-1])
    assert events[-1].result.images[0].png == res.images[0].png
    assert any(e.previews for e in events[:-1]), "no previews streamed"
    caps = gen.Caption(generation_pb2.CaptionRequest(image=scene(native)), timeout=TIMEOUT)
    assert len(caps.captions) == 1 and caps.model
    models = gen.ListModels(generation_pb2.ListModelsRequest(), timeout=TIMEOUT).models
    assert models[0].edits


def test_grpc_bad_input_is_invalid_argument(gen, native, mixed):
    bad = [
        generation_pb2.EditRequest(image=b"not an image", prompt="make it red"),
        generation_pb2.EditRequest(image=png(native * 2), prompt="make it red"),
        generation_pb2.EditRequest(image=scene(native), prompt=" "),
        generation_pb2.EditRequest(image=scene(native), prompt="x", mask=png(native // 2)),
        generation_pb2.EditRequest(image=bytes(MAX_IMAGE_BYTES + 1), prompt="x"),
    ]
    for req in bad:
        with pytest.raises(grpc.RpcError) as info:
            gen.Edit(req, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req.prompt
        assert info.value.details()
    for req in (
        generation_pb2.CaptionRequest(image=scene(native), n=2),  # greedy, several
        generation_pb2.CaptionRequest(image=scene(native), temperature=1e-30),  # under the floor
    ):
        with pytest.raises(grpc.RpcError) as info:
            gen.Caption(req, timeout=TIMEOUT)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, req
    # the floor itself passes, though float32 carries it as 0.0099999998
    at_floor = generation_pb2.CaptionRequest(image=scene(native), n=2, temperature=0.01)
    assert len(gen.Caption(at_floor, timeout=TIMEOUT).captions) == 2


# ---------------------------------------------------------------- jobs
def test_edit_job_runs_with_previews_and_matches_sync(http, native, mixed):
    form = edit_form(scene(native), "make the circle blue", seed=11)
    r = http.post("/v1/jobs/edits", **form, headers={"Idempotency-Key": "it-edit-1"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["request"]["prompt"] == "make the circle blue" and "image" not in job["request"]
    events = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events", timeout=TIMEOUT) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert any(e.get("previews") for e in events), "no previews in the job's events"
    done = wait_done(http, job["id"])
    assert done["state"] == "succeeded", done
    sync = http.post("/v1/images/edits", **form).json()
    assert done["result"]["data"][0]["b64_json"] == sync["data"][0]["b64_json"]
    again = http.post("/v1/jobs/edits", **form, headers={"Idempotency-Key": "it-edit-1"})
    assert again.json()["id"] == job["id"]


def test_edit_job_bad_input_is_refused_before_queueing(http, gen, native, mixed):
    for name, form, _ in bad_edits(native):
        r = http.post("/v1/jobs/edits", **form)
        assert r.status_code == 400, (name, r.text)
    edit = generation_pb2.EditRequest(image=png(native * 2), prompt="make it red")
    with pytest.raises(grpc.RpcError) as info:
        gen.SubmitJob(generation_pb2.SubmitJobRequest(edit=edit), timeout=TIMEOUT)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_edit_job(gen, native, mixed):
    edit = generation_pb2.EditRequest(image=scene(native), prompt="make it blue", seed=2)
    job = gen.SubmitJob(generation_pb2.SubmitJobRequest(edit=edit), timeout=TIMEOUT).job
    last = list(gen.WatchJob(generation_pb2.WatchJobRequest(id=job.id), timeout=TIMEOUT))[-1]
    assert last.job.state == "succeeded" and len(last.job.result.images) == 1
