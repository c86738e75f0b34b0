"""The Tokenizer and Detokenizer deployment classes in-process: budgets that fit one maximal
request, and batches whose every request gets what it would get alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument
from tessera.common.images import (
    arrays_to_tensor,
    decode_image,
    encode_png,
    pixels_from_proto,
    tensor_to_arrays,
)
from tessera.common.limits import MAX_ITEMS_PER_CALL as MAX_ITEMS
from tessera.common.protos import grid_to_proto, tensor_from_proto, tensor_to_proto
from tessera.tokenizer.deployment import DecodeItem, Detokenizer, Tokenizer
from tessera.v1 import tokenizer_pb2


@pytest.fixture(scope="module")
def halves(bundle):
    return Tokenizer.func_or_class(bundle, "cpu"), Detokenizer.func_or_class(bundle, "cpu")


def images(n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_each_budget_fits_one_maximal_request(halves):
    tok, detok = halves
    assert tok._tokenize_batch._get_max_batch_size() >= MAX_ITEMS * tok.model.image_size**2
    assert detok._decode_batch._get_max_batch_size() >= MAX_ITEMS * detok.model.grid_size**2
    assert tok.model_loaded and detok.model_loaded


def test_a_batch_of_tokenize_requests_answers_each_as_alone(halves):
    tok, _ = halves
    size = tok.model.image_size
    items = [(images(1, size, 0), False), (images(3, size, 1), True)]
    together = tok._tokenize_many(items)
    for item, got in zip(items, together, strict=True):
        alone = tok._tokenize_many([item])[0]
        assert len(got.grids) == len(item[0]) and len(got.latents) == (3 if item[1] else 0)
        assert list(got.grids) == list(alone.grids)


def test_a_batch_of_mixed_detokenize_requests_answers_each_as_alone(halves):
    tok, detok = halves
    size = tok.model.image_size
    tokens = tok._tokenize_many([(images(3, size, 2), True)])[0]
    grids = tokenizer_pb2.DetokenizeRequest(grids=list(tokens.grids)[:2])
    latents = tokenizer_pb2.DetokenizeRequest(latents=list(tokens.latents)[2:])
    more_grids = tokenizer_pb2.DetokenizeRequest(grids=[grid_to_proto(tokens_grid(tok))])
    items = [DecodeItem(*detok._parse(r), False) for r in (grids, latents, more_grids)]
    together = detok._decode_many(items)
    assert [len(r.images) for r in together] == [2, 1, 1]
    for item, got in zip(items, together, strict=True):
        assert list(got.images) == list(detok._decode_many([item])[0].images)


def tokens_grid(tok: Tokenizer) -> torch.Tensor:
    g = tok.model.grid_size
    return torch.arange(g * g).view(g, g) % tok.model.codebook_size


async def test_tokenize_then_detokenize_through_the_public_methods(halves):
    tok, detok = halves
    size = tok.model.image_size
    pngs = [encode_png(a) for a in images(2, size, 3)]
    tokens = await tok.Tokenize(tokenizer_pb2.TokenizeRequest(images=pngs))
    back = await detok.Detokenize(tokenizer_pb2.DetokenizeRequest(grids=list(tokens.grids)))
    assert len(back.images) == 2 and back.images[0].width == size


async def test_return_pixels_answers_the_pngs_pixels_raw(halves):
    """What the routes ask for: the same images, as raw RGB instead of PNG."""
    tok, detok = halves
    size = tok.model.image_size
    tokens = tok._tokenize_many([(images(2, size, 4), False)])[0]
    req = tokenizer_pb2.DetokenizeRequest(grids=list(tokens.grids))
    pngs = await detok.Detokenize(req)
    req.return_pixels = True
    raw = await detok.Detokenize(req)
    assert not raw.images and len(raw.pixels) == 2 and not pngs.pixels
    for png, pixels in zip(pngs.images, raw.pixels, strict=True):
        assert (pixels.width, pixels.height) == (size, size)
        assert (pixels_from_proto(pixels) == decode_image(png.png, size, resize=False)).all()


@pytest.fixture(scope="module", params=["gumbel", "kl"])
def kind_halves(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"bundle-{request.param}")
    build_random_bundle(path, "tiny", tiny=True, seed=0, tokenizer_kind=request.param)
    return Tokenizer.func_or_class(str(path), "cpu"), Detokenizer.func_or_class(str(path), "cpu")


async def test_a_bundle_of_another_kind_is_served_by_the_same_deployments(kind_halves):
    """gumbel answers grids like vq; kl answers latents only and decodes them unsnapped."""
    tok, detok = kind_halves
    model, size = tok.model, tok.model.image_size
    arrays = images(2, size, 5)
    pngs = [encode_png(a) for a in arrays]
    tokens = await tok.Tokenize(tokenizer_pb2.TokenizeRequest(images=pngs))
    assert tokens.kind == model.kind and len(tokens.latents) == (2 if model.kind == "kl" else 0)
    if model.kind == "kl":
        assert not tokens.grids and tokens.codebook_size == 0
        latents = list(tokens.latents)
        with pytest.raises(InvalidArgument, match="continuous"):
            zeros = torch.zeros(model.grid_size, model.grid_size, dtype=torch.long)
            detok._parse(tokenizer_pb2.DetokenizeRequest(grids=[grid_to_proto(zeros)]))
        # quantize asks to snap to a codebook: a kl tokenizer has none and decodes as is
        snapped = await detok.Detokenize(
            tokenizer_pb2.DetokenizeRequest(latents=latents, quantize=True, return_pixels=True)
        )
    else:
        assert len(tokens.grids) == 2 and tokens.codebook_size == model.codebook_size
        with_latents = await tok.Tokenize(
            tokenizer_pb2.TokenizeRequest(images=pngs, return_latents=True)
        )
        latents = list(with_latents.latents)
        noisy = [tensor_to_proto(tensor_from_proto(z, list(z.shape)) + 0.01) for z in latents]
        snapped = await detok.Detokenize(
            tokenizer_pb2.DetokenizeRequest(latents=noisy, quantize=True, return_pixels=True)
        )
        by_grid = await detok.Detokenize(
            tokenizer_pb2.DetokenizeRequest(grids=list(tokens.grids), return_pixels=True)
        )
        assert list(by_grid.pixels) == list(snapped.pixels)
    plain = await detok.Detokenize(
        tokenizer_pb2.DetokenizeRequest(latents=latents, return_pixels=True)
    )
    x = arrays_to_tensor(arrays)
    expected = tensor_to_arrays(model.decode_latents(model.encode_latents(x), quantize=False))
    got = np.stack([pixels_from_proto(p) for p in plain.pixels])
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # float32 proto round trip
    if model.kind == "kl":
        assert list(plain.pixels) == list(snapped.pixels)
