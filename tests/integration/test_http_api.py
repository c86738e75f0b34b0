"""The public HTTP API against the running stack: both routes, components, meta, errors."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

pytestmark = pytest.mark.integration


def png_size(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


@pytest.fixture(scope="module")
def native(http) -> int:
    return http.get("/v1/models").json()["data"][0]["image_size"]


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_generate_route_returns_images(http, native, route):
    r = http.post(
        "/v1/images/generations", json={"prompt": "a red circle", "n": 2, "route": route, "seed": 7}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["route"] == route and body["seed"] == 7 and len(body["data"]) == 2
    assert all(png_size(d["b64_json"]) == (native, native) for d in body["data"])


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_same_seed_same_image(http, route):
    req = {"prompt": "a happy face", "route": route, "seed": 1234, "n": 1}
    a = http.post("/v1/images/generations", json=req).json()["data"][0]["b64_json"]
    b = http.post("/v1/images/generations", json=req).json()["data"][0]["b64_json"]
    c = http.post("/v1/images/generations", json={**req, "seed": 4321}).json()["data"][0][
        "b64_json"
    ]
    assert a == b
    assert a != c


def test_size_upscales_and_url_format(http, native):
    side = native * 2
    r = http.post(
        "/v1/images/generations",
        json={"prompt": "a cat", "size": f"{side}x{side}", "response_format": "url"},
    )
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    assert png_size(url.split(",", 1)[1]) == (side, side)


def test_unmodified_openai_client(stack, native):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=stack["http"] + "/v1", api_key="unused", max_retries=0)
    res = client.images.generate(prompt="a small red fruit", n=1, response_format="b64_json")
    assert png_size(res.data[0].b64_json) == (native, native)


def test_variations_multipart(http, native):
    img = Image.new("RGB", (native, native), (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    r = http.post(
        "/v1/images/variations",
        files={"image": ("x.png", buf.getvalue(), "image/png")},
        data={"n": "2", "seed": "3"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2


def test_tokenize_detokenize_round_trip(http, native):
    img = Image.new("RGB", (native, native), (30, 200, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    b64 = base64.b64encode(buf.getvalue()).decode()
    tok = http.post("/v1/tokenize", json={"images": [b64], "return_latents": True})
    assert tok.status_code == 200, tok.text
    body = tok.json()
    grid = body["grids"][0]
    assert len(grid["tokens"]) == grid["height"] * grid["width"]
    assert all(0 <= t < body["codebook_size"] for t in grid["tokens"])
    det = http.post("/v1/detokenize", json={"grids": [grid]})
    assert det.status_code == 200, det.text
    assert png_size(det.json()["data"][0]["b64_json"]) == (native, native)
    det2 = http.post("/v1/detokenize", json={"latents": body["latents"], "quantize": True})
    assert det2.status_code == 200, det2.text


def test_embeddings(http, native):
    r = http.post("/v1/embeddings/text", json={"texts": ["a dog", "a cat"]})
    assert r.status_code == 200, r.text
    emb = r.json()
    assert len(emb["embeddings"]) == 2 and len(emb["embeddings"][0]) == emb["dim"]
    norm = sum(v * v for v in emb["embeddings"][0]) ** 0.5
    assert abs(norm - 1) < 1e-3
    img = Image.new("RGB", (native, native), (0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    r = http.post(
        "/v1/embeddings/image", json={"images": [base64.b64encode(buf.getvalue()).decode()]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["dim"] == emb["dim"]


def test_meta_endpoints(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = http.get("/v1/models").json()
    routes = set(models["data"][0]["routes"])
    assert models["object"] == "list" and routes == {"ar", "unclip", "pixel", "mixed"}
    assert http.get("/docs").status_code == 200
    spec = http.get("/openapi.json").json()
    assert "/v1/images/generations" in spec["paths"]


GEN = "/v1/images/generations"
BAD_REQUESTS = [
    ("post", GEN, {"prompt": ""}, 400),
    ("post", GEN, {"prompt": "   "}, 400),
    ("post", GEN, {"prompt": "x" * 501}, 400),
    ("post", GEN, {}, 400),
    ("post", GEN, {"prompt": "a", "n": 0}, 400),
    ("post", GEN, {"prompt": "a", "n": 100}, 400),
    ("post", GEN, {"prompt": "a", "size": "big"}, 400),
    ("post", GEN, {"prompt": "a", "size": "64x32"}, 400),
    ("post", GEN, {"prompt": "a", "size": "9999x9999"}, 400),
    ("post", GEN, {"prompt": "a", "size": "100x100"}, 400),
    ("post", GEN, {"prompt": "a", "steps": 0}, 400),
    ("post", GEN, {"prompt": "a", "steps": 100000}, 400),
    ("post", GEN, {"prompt": "a", "guidance_scale": -1}, 400),
    ("post", GEN, {"prompt": "a", "guidance_scale": 1e9}, 400),
    ("post", GEN, {"prompt": "a", "temperature": 0}, 400),
    ("post", GEN, {"prompt": "a", "top_p": 0}, 400),
    ("post", GEN, {"prompt": "a", "top_p": 1.5}, 400),
    ("post", GEN, {"prompt": "a", "top_k": -1}, 400),
    ("post", GEN, {"prompt": "a", "seed": -5}, 400),
    ("post", GEN, {"prompt": "a", "response_format": "gif"}, 400),
    ("post", GEN, {"prompt": "a", "unknown_field": 1}, 400),
    ("post", GEN, {"prompt": 5}, 400),
    ("post", GEN, {"prompt": "a", "route": "teleport"}, 404),
    ("post", GEN, {"prompt": "a", "model": "no-such-model"}, 404),
    ("post", "/v1/tokenize", {"images": ["not base64!!"]}, 400),
    ("post", "/v1/tokenize", {"images": [base64.b64encode(b"not an image").decode()]}, 400),
    ("post", "/v1/tokenize", {"images": []}, 400),
    ("post", "/v1/detokenize", {}, 400),
    ("post", "/v1/detokenize", {"grids": [{"tokens": [1, 2, 3], "height": 1, "width": 3}]}, 400),
    ("post", "/v1/detokenize", {"latents": [{"values": [0.0], "shape": [1, 1, 1]}]}, 400),
    ("post", "/v1/embeddings/text", {"texts": []}, 400),
    ("post", "/v1/embeddings/text", {"texts": [""]}, 400),
    ("post", "/v1/embeddings/image", {"images": ["%%%"]}, 400),
]


@pytest.mark.parametrize(("method", "path", "body", "status"), BAD_REQUESTS)
def test_bad_input_is_a_clear_4xx(http, method, path, body, status):
    r = http.request(method, path, json=body, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["code"]


def test_malformed_json_and_bad_variation_image(http):
    r = http.post(
        GEN, content=b"{not json", headers={"content-type": "application/json"}, timeout=30
    )
    assert r.status_code == 400
    r = http.post(
        "/v1/images/variations",
        files={"image": ("x.png", b"GIF89a nonsense", "image/png")},
        timeout=30,
    )
    assert r.status_code == 400, r.text
    r = http.post("/v1/images/variations", data={"n": "2"}, timeout=30)
    assert r.status_code == 400, r.text


def test_detokenize_rejects_out_of_range_tokens(http):
    tok = http.post("/v1/tokenize", json={"images": [_white_png()]}).json()
    grid = tok["grids"][0]
    grid["tokens"][0] = tok["codebook_size"]
    r = http.post("/v1/detokenize", json={"grids": [grid]})
    assert r.status_code == 400 and "token values" in r.json()["error"]["message"]


def _white_png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 255, 255)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
