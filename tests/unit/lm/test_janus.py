"""Janus served by Tessera's own LanguageModel and Detokenizer deployment classes, in
process, against ``transformers``' ``JanusForConditionalGeneration`` on the same tiny
random snapshot.

Tokens are compared two ways: greedy (Tessera ``top_k=1``, the library ``do_sample=False``),
and sampled with the same randomness: the library's one random call,
``torch.multinomial(probs, 1)``, is replaced by an inverse-CDF draw at the uniform numbers
Tessera's engine draws for the request's seed (``draw_uniforms``), so both sides turn the same
probabilities into the same code. Everything else (prompt ids, null condition, the cache, the
classifier-free guidance mix, softmax) is each side's own."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tessera.common.errors import InvalidArgument
from tessera.common.protos import grid_to_proto
from tessera.imports import import_directory
from tessera.imports.janus_tiny import GRID, build_tiny_janus
from tessera.lm.deployment import LanguageModel
from tessera.lm.janus import PROMPT_TEMPLATE
from tessera.lm.sampling import draw_uniforms
from tessera.routes.local import local_pipelines
from tessera.routes.schemas import GenerationParams
from tessera.tokenizer.deployment import Detokenizer
from tessera.v1 import lm_pb2, tokenizer_pb2

PROMPTS = ("a red cat", "the big blue dog on a tree under the sun")


@pytest.fixture(scope="module")
def janus(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("janus")
    snapshot = build_tiny_janus(root / "Janus-tiny")
    return snapshot, import_directory(snapshot, root / "janus-tiny")


@pytest.fixture(scope="module")
def library(janus: tuple) -> tuple:
    from transformers import AutoTokenizer, JanusForConditionalGeneration

    snapshot, _ = janus
    model = JanusForConditionalGeneration.from_pretrained(snapshot, local_files_only=True)
    return model.eval(), AutoTokenizer.from_pretrained(snapshot, local_files_only=True)


@pytest.fixture(scope="module")
def lm(janus: tuple) -> LanguageModel:
    replica = LanguageModel.func_or_class(str(janus[1]), "cpu")
    yield replica
    replica.engine.close()


def library_tokens(library: tuple, prompt: str, guidance: float, seed: int | None = None):
    """``generate(generation_mode="image")`` on the prompt the processor would build;
    greedy, or sampled at Tessera's uniforms for ``seed``."""
    model, tokenizer = library
    text = PROMPT_TEMPLATE.replace("{prompt}", prompt) + tokenizer.boi_token
    inputs = tokenizer(text, return_tensors="pt")
    if seed is None:
        return model.generate(
            **inputs, generation_mode="image", do_sample=False, guidance_scale=guidance
        )[0]
    uniforms = iter(draw_uniforms([seed], GRID * GRID, torch.device("cpu"))[0])

    def inverse_cdf(probs: torch.Tensor, num_samples: int) -> torch.Tensor:
        cdf = probs.cumsum(-1)
        return torch.searchsorted(cdf, next(uniforms) * cdf[:, -1:], right=True)

    original, torch.multinomial = torch.multinomial, inverse_cdf
    try:
        return model.generate(
            **inputs, generation_mode="image", do_sample=True, top_k=0, guidance_scale=guidance
        )[0]
    finally:
        torch.multinomial = original


def served(response: lm_pb2.SampleTokensResponse) -> list[torch.Tensor]:
    return [torch.tensor(g.tokens) for g in response.grids]


async def test_greedy_tokens_are_the_library_generate_tokens(lm, library) -> None:
    """Two prompts of different lengths and guidance scales, sampled together (one engine
    batch, left-aligned prompts), each give the library's tokens for that prompt alone."""
    cases = [(p, g) for p in PROMPTS for g in (5.0, 2.5)]
    responses = await asyncio.gather(
        *(
            lm.SampleTokens(lm_pb2.SampleTokensRequest(prompt=p, seed=1, top_k=1, guidance_scale=g))
            for p, g in cases
        )
    )
    assert lm.engine.max_running > 2  # they shared steps
    seen = set()
    for (prompt, guidance), response in zip(cases, responses, strict=True):
        (tokens,) = served(response)
        assert torch.equal(tokens, library_tokens(library, prompt, guidance))
        seen.add(tuple(tokens.tolist()))
    assert len(seen) == len(cases)  # the tokens depend on prompt and guidance


async def test_sampled_tokens_are_the_library_tokens_at_the_same_uniforms(lm, library) -> None:
    request = lm_pb2.SampleTokensRequest(prompt=PROMPTS[0], seeds=[7, 8], guidance_scale=5.0)
    first, second = served(await lm.SampleTokens(request))
    assert torch.equal(first, library_tokens(library, PROMPTS[0], 5.0, seed=7))
    assert torch.equal(second, library_tokens(library, PROMPTS[0], 5.0, seed=8))
    assert not torch.equal(first, second)
    assert not torch.equal(first, library_tokens(library, PROMPTS[0], 5.0))  # not greedy


async def test_the_detokenizer_decodes_codes_as_the_library_does(janus, library) -> None:
    model, _ = library
    codes = library_tokens(library, PROMPTS[1], 5.0)
    detok = Detokenizer.func_or_class(str(janus[1]), "cpu")
    response = await detok.Detokenize(
        tokenizer_pb2.DetokenizeRequest(grids=[grid_to_proto(codes.view(GRID, GRID))])
    )
    (image,) = response.images
    ours = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.float64)
    with torch.no_grad():
        pixels = model.decode_image_tokens(codes.view(1, -1))[0]  # (H, W, 3) in [-1, 1]
    theirs = ((pixels.clamp(-1, 1) + 1) * 127.5).numpy()
    assert ours.shape == theirs.shape == (GRID * 2, GRID * 2, 3)
    assert np.abs(ours - theirs).max() <= 0.5 + 1e-4  # float -> uint8 rounding only
    assert ours.std() > 5  # an image, not a flat colour


async def test_stream_previews_then_the_unary_answer(lm) -> None:
    request = lm_pb2.SampleTokensRequest(prompt=PROMPTS[0], seed=3, guidance_scale=5.0)
    events = [
        e
        async for e in lm.SampleTokensStream(
            lm_pb2.SampleTokensStreamRequest(request=request, stream_every=4)
        )
    ]
    assert [e.progress.step for e in events] == [4, 8, 12, 16]
    assert list(events[0].grids[0].tokens).count(-1) == GRID * GRID - 4
    assert events[-1].done
    unary = await lm.SampleTokens(request)
    assert list(events[-1].grids[0].tokens) == list(unary.grids[0].tokens)


async def test_requests_the_model_cannot_take_are_invalid(lm) -> None:
    with pytest.raises(InvalidArgument, match="tokenizes its own prompts"):
        from tessera.common.protos import text_states_to_proto
        from tessera.common.text_encoder import TextBatch

        states = TextBatch(torch.zeros(1, 2, 384), torch.ones(1, 2, dtype=torch.bool), None)
        await lm.SampleTokens(
            lm_pb2.SampleTokensRequest(prompt="a", text_states=text_states_to_proto(states))
        )
    with pytest.raises(InvalidArgument, match="prompt is .* tokens"):
        await lm.SampleTokens(lm_pb2.SampleTokensRequest(prompt="a " * 200))
    with pytest.raises(InvalidArgument, match="top_k"):
        await lm.SampleTokens(lm_pb2.SampleTokensRequest(prompt="a", top_k=33))


async def test_the_ar_route_in_process_returns_the_library_image(janus, library) -> None:
    """Gateway routes over in-process stand-ins: only the services the bundle has."""
    pipelines = local_pipelines(janus[1], "cpu")
    assert pipelines.handles.prior is None and pipelines.handles.decoder is None
    params = GenerationParams(prompt=PROMPTS[0], top_k=1, guidance_scale=5.0, size="16x16")
    assert pipelines.info.image_size == GRID * 2  # the native size, from the VQ config
    response = await pipelines.generate(params)
    (image,) = response.images
    ours = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"), dtype=np.float64)
    ours = ours[::2, ::2]  # 16x16 is the native 8x8 upscaled by 2
    with torch.no_grad():
        pixels = library[0].decode_image_tokens(library_tokens(library, PROMPTS[0], 5.0)[None])
    theirs = ((pixels[0].clamp(-1, 1) + 1) * 127.5).numpy()
    assert np.abs(ours - theirs).max() <= 0.5 + 1e-4
    for _, handle in pipelines.handles.items():
        if hasattr(handle._instance, "engine"):
            handle._instance.engine.close()


async def test_cancelling_frees_the_rows_at_the_next_token(lm) -> None:
    """A request whose progress callback says stop leaves the engine after that token, and
    its two KV-cache rows (guided) go back to the pool; the next request is unaffected."""
    from tessera.common.errors import Cancelled
    from tessera.lm.sampling import SamplingParams

    text = lm.model.encode([PROMPTS[0]])
    future = lm.engine.submit(
        text, [SamplingParams(guidance_scale=5.0)], lambda done, grids: done < 3, 1
    )
    with pytest.raises(Cancelled, match="after 3 of 16 tokens"):
        await asyncio.wrap_future(future)
    # The future settles inside the step that drops the request; the rows go back at the
    # end of that step (on the engine's thread): wait for it, boundedly.
    for _ in range(500):
        if lm.engine.running_rows == 0:
            break
        await asyncio.sleep(0.01)
    assert lm.engine.running_rows == 0
    request = lm_pb2.SampleTokensRequest(prompt=PROMPTS[0], top_k=1, guidance_scale=5.0)
    (tokens,) = served(await lm.SampleTokens(request))
    assert tokens.min() >= 0


def test_half_precision_keeps_the_rotary_frequencies_exact(janus) -> None:
    """What CUDA serving does to the weights (``serving_dtype``: bf16, else fp16), on CPU:
    the cache follows the weights, the rotary table stays float32, sampling runs."""
    from tessera.common.checkpoint import load_bundle_component
    from tessera.lm.engine import ContinuousSampler
    from tessera.lm.sampling import SamplingParams

    model = load_bundle_component(janus[1], "lm").to(torch.bfloat16)
    rotary = model.language_model.rotary_emb
    assert rotary.inv_freq.dtype == torch.float32
    assert model.new_cache(1).k[0].dtype == torch.bfloat16
    engine = ContinuousSampler(model, max_rows=4)
    try:
        future = engine.submit(model.encode([PROMPTS[0]]), [SamplingParams(guidance_scale=5.0)])
        grid = future.result(timeout=60)
    finally:
        engine.close()
    assert grid.shape == (1, GRID, GRID) and int(grid.min()) >= 0
