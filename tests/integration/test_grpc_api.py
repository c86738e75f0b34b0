"""gRPC against the running stack: the public GenerationService, each model service's own
contract on the same port, streaming, health, reflection, and status codes for bad input."""

from __future__ import annotations

import io

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from tessera.v1 import (
    common_pb2,
    decoder_pb2,
    decoder_pb2_grpc,
    generation_pb2,
    generation_pb2_grpc,
    lm_pb2,
    lm_pb2_grpc,
    prior_pb2,
    prior_pb2_grpc,
    tokenizer_pb2,
    tokenizer_pb2_grpc,
)

pytestmark = pytest.mark.integration
TIMEOUT = 120


def png(side: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def gen(channel):
    return generation_pb2_grpc.GenerationServiceStub(channel)


@pytest.fixture(scope="module")
def native(gen) -> int:
    return gen.ListModels(generation_pb2.ListModelsRequest(), timeout=TIMEOUT).models[0].image_size


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_generate_both_routes(gen, native, route):
    res = gen.Generate(
        generation_pb2.GenerateRequest(prompt="a blue square", route=route, n=2, seed=5),
        timeout=TIMEOUT,
    )
    assert res.route == route and res.seed == 5 and len(res.images) == 2
    assert Image.open(io.BytesIO(res.images[0].png)).size == (native, native)


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_generate_is_deterministic_by_seed_and_matches_http(gen, http, route):
    req = generation_pb2.GenerateRequest(prompt="a tree", route=route, seed=99)
    a = gen.Generate(req, timeout=TIMEOUT).images[0].png
    b = gen.Generate(req, timeout=TIMEOUT).images[0].png
    assert a == b
    import base64

    via_http = http.post(
        "/v1/images/generations", json={"prompt": "a tree", "route": route, "seed": 99}
    ).json()
    assert base64.b64decode(via_http["data"][0]["b64_json"]) == a


@pytest.mark.parametrize("route", ["ar", "unclip"])
def test_generate_stream_progress_then_result(gen, route):
    events = list(
        gen.GenerateStream(
            generation_pb2.GenerateStreamRequest(
                request=generation_pb2.GenerateRequest(prompt="a star", route=route, seed=1)
            ),
            timeout=TIMEOUT,
        )
    )
    assert len(events) >= 2
    progress = [e for e in events if not e.HasField("result")]
    assert progress and any(e.previews for e in progress)
    assert events[-1].HasField("result") and len(events[-1].result.images) == 1
    steps = [e.progress.step for e in progress if e.progress.stage in ("lm", "decoder")]
    assert steps == sorted(steps)


def test_variations(gen, native):
    res = gen.Variations(
        generation_pb2.VariationsRequest(image=png(native, (10, 200, 10)), n=2, seed=3),
        timeout=TIMEOUT,
    )
    assert len(res.result.images) == 2


def test_model_services_directly(channel, native):
    tok = tokenizer_pb2_grpc.TokenizerServiceStub(channel).Tokenize(
        tokenizer_pb2.TokenizeRequest(images=[png(native, (255, 0, 0))], return_latents=True),
        timeout=TIMEOUT,
    )
    assert len(tok.grids) == 1 and len(tok.latents) == 1
    det = tokenizer_pb2_grpc.DetokenizerServiceStub(channel).Detokenize(
        tokenizer_pb2.DetokenizeRequest(grids=tok.grids), timeout=TIMEOUT
    )
    assert det.images[0].width == native
    lm = lm_pb2_grpc.LanguageModelServiceStub(channel)
    grids = lm.SampleTokens(
        lm_pb2.SampleTokensRequest(prompt="a cat", n=2, seed=4), timeout=TIMEOUT
    )
    assert len(grids.grids) == 2 and grids.seed == 4
    events = list(
        lm.SampleTokensStream(
            lm_pb2.SampleTokensStreamRequest(
                request=lm_pb2.SampleTokensRequest(prompt="a cat", seed=4), stream_every=2
            ),
            timeout=TIMEOUT,
        )
    )
    assert events[-1].done and list(events[-1].grids[0].tokens) == list(grids.grids[0].tokens)
    assert any(-1 in e.grids[0].tokens for e in events[:-1])
    prior = prior_pb2_grpc.PriorServiceStub(channel)
    text = prior.EmbedText(prior_pb2.EmbedTextRequest(texts=["a cat"]), timeout=TIMEOUT)
    image = prior.EmbedImage(
        prior_pb2.EmbedImageRequest(images=[png(native, (0, 0, 0))]), timeout=TIMEOUT
    )
    assert text.embeddings[0].dim == image.embeddings[0].dim
    sampled = prior.SamplePrior(
        prior_pb2.SamplePriorRequest(prompt="a cat", n=2, seed=1), timeout=TIMEOUT
    )
    assert len(sampled.embeddings) == 2
    dec = decoder_pb2_grpc.DecoderServiceStub(channel)
    req = decoder_pb2.SampleLatentsRequest(image_embeddings=sampled.embeddings, seed=2, steps=4)
    latents = dec.SampleLatents(req, timeout=TIMEOUT)
    assert len(latents.latents) == 2
    stream = list(
        dec.SampleLatentsStream(
            decoder_pb2.SampleLatentsStreamRequest(
                request=decoder_pb2.SampleLatentsRequest(
                    image_embeddings=sampled.embeddings, seed=2, steps=4
                ),
                stream_every=1,
            ),
            timeout=TIMEOUT,
        )
    )
    assert stream[-1].done and list(stream[-1].latents[0].values) == pytest.approx(
        list(latents.latents[0].values), abs=1e-5
    )


def test_concurrent_prior_embeds_each_get_their_own_answer(channel, native):
    """EmbedText and EmbedImage batch concurrent requests in the replica: each caller must
    still get exactly the answer it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    prior = prior_pb2_grpc.PriorServiceStub(channel)
    texts = [f"a shape number {i}" for i in range(8)]
    colors = [(30 * i, 255 - 30 * i, 7 * i) for i in range(8)]

    def text(t: str) -> list[float]:
        res = prior.EmbedText(prior_pb2.EmbedTextRequest(texts=[t]), timeout=TIMEOUT)
        return list(res.embeddings[0].values)

    def image(c: tuple[int, int, int]) -> list[float]:
        req = prior_pb2.EmbedImageRequest(images=[png(native, c)])
        return list(prior.EmbedImage(req, timeout=TIMEOUT).embeddings[0].values)

    alone = [text(t) for t in texts], [image(c) for c in colors]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(text, texts)), list(pool.map(image, colors))
    for expected, got in zip(alone, together, strict=True):
        for a, b in zip(expected, got, strict=True):
            assert a == pytest.approx(b, abs=1e-5)
        assert len({tuple(round(v, 4) for v in e) for e in got}) == len(got)  # all distinct


def test_health_and_reflection(channel):
    status = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=TIMEOUT
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=TIMEOUT
        )
    )
    names = {s.name for s in replies[0].list_services_response.service}
    assert {
        "tessera.v1.GenerationService",
        "tessera.v1.TokenizerService",
        "tessera.v1.DecoderService",
    } <= names


def _code(fn, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        result = fn(*args, timeout=TIMEOUT)
        if not hasattr(result, "ByteSize"):  # a stream: drain it
            list(result)
    assert info.value.details()
    return info.value.code()


def test_bad_input_maps_to_status_codes(channel, gen):
    INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    assert _code(gen.Generate, generation_pb2.GenerateRequest(prompt="")) == INVALID
    assert _code(gen.Generate, generation_pb2.GenerateRequest(prompt="a", n=50)) == INVALID
    assert _code(gen.Generate, generation_pb2.GenerateRequest(prompt="a", steps=0)) == INVALID
    assert _code(gen.Generate, generation_pb2.GenerateRequest(prompt="a", top_p=2.0)) == INVALID
    assert (
        _code(gen.Generate, generation_pb2.GenerateRequest(prompt="a", route="nope")) == NOT_FOUND
    )
    assert (
        _code(gen.Generate, generation_pb2.GenerateRequest(prompt="a", model="nope")) == NOT_FOUND
    )
    empty = generation_pb2.GenerateStreamRequest(request=generation_pb2.GenerateRequest(prompt=""))
    assert _code(gen.GenerateStream, empty) == INVALID
    assert _code(gen.Variations, generation_pb2.VariationsRequest(image=b"junk")) == INVALID
    tok = tokenizer_pb2_grpc.TokenizerServiceStub(channel)
    assert _code(tok.Tokenize, tokenizer_pb2.TokenizeRequest(images=[b"junk"])) == INVALID
    assert _code(tok.Tokenize, tokenizer_pb2.TokenizeRequest()) == INVALID
    det = tokenizer_pb2_grpc.DetokenizerServiceStub(channel)
    bad_grid = common_pb2.TokenGrid(tokens=[0], height=1, width=1)
    assert _code(det.Detokenize, tokenizer_pb2.DetokenizeRequest(grids=[bad_grid])) == INVALID
    lm = lm_pb2_grpc.LanguageModelServiceStub(channel)
    assert (
        _code(lm.SampleTokens, lm_pb2.SampleTokensRequest(prompt="a", temperature=0.0)) == INVALID
    )
    assert (
        _code(
            lm.SampleTokensStream,
            lm_pb2.SampleTokensStreamRequest(
                request=lm_pb2.SampleTokensRequest(prompt="a", guidance_scale=-1)
            ),
        )
        == INVALID
    )
    prior = prior_pb2_grpc.PriorServiceStub(channel)
    assert _code(prior.EmbedText, prior_pb2.EmbedTextRequest()) == INVALID
    assert _code(prior.SamplePrior, prior_pb2.SamplePriorRequest(prompt="a", steps=0)) == INVALID
    dec = decoder_pb2_grpc.DecoderServiceStub(channel)
    bad_emb = common_pb2.Embedding(values=[0.0], dim=1)
    assert (
        _code(dec.SampleLatents, decoder_pb2.SampleLatentsRequest(image_embeddings=[bad_emb]))
        == INVALID
    )
