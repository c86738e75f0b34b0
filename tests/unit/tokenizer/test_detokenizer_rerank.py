"""The Detokenizer's CLIP reranking (``DetokenizeRequest.rerank``), in-process on a tiny
random bundle, checked against the Prior's own CLIP endpoints (EmbedText / EmbedImage): what
the ar route called before the reranking moved into the Detokenizer."""

from __future__ import annotations

import copy

import pytest
import torch

from tessera.common.errors import InvalidArgument
from tessera.common.protos import grid_to_proto
from tessera.prior.deployment import Prior
from tessera.tokenizer.deployment import DecodeItem, Detokenizer
from tessera.v1 import prior_pb2, tokenizer_pb2


@pytest.fixture(scope="module")
def detok(bundle):
    return Detokenizer.func_or_class(bundle, "cpu")


@pytest.fixture(scope="module")
def prior(bundle):
    replica = Prior.func_or_class(bundle, "cpu")
    yield replica
    replica.engine.close()


def random_grids(detok: Detokenizer, n: int, seed: int) -> list:
    g, v = detok.model.grid_size, detok.model.codebook_size
    gen = torch.Generator().manual_seed(seed)
    return [grid_to_proto(torch.randint(0, v, (g, g), generator=gen)) for _ in range(n)]


async def states_and_embedding(prior: Prior, prompt: str) -> tuple:
    text = await prior.EmbedText(prior_pb2.EmbedTextRequest(texts=[prompt], return_states=True))
    return text.text_states[0], list(text.embeddings[0].values)


async def test_each_group_keeps_the_candidate_the_priors_clip_scores_best(detok, prior):
    k, groups = 3, 5
    states, t = await states_and_embedding(prior, "a red heart")
    grids = random_grids(detok, k * groups, seed=1)
    plain = await detok.Detokenize(tokenizer_pb2.DetokenizeRequest(grids=grids, return_pixels=True))
    emb = await prior.EmbedImage(prior_pb2.EmbedImageRequest(pixels=plain.pixels))
    scores = [sum(a * b for a, b in zip(e.values, t, strict=True)) for e in emb.embeddings]
    rerank = tokenizer_pb2.Rerank(text_states=states, candidates=k)
    res = await detok.Detokenize(
        tokenizer_pb2.DetokenizeRequest(grids=grids, return_pixels=True, rerank=rerank)
    )
    best = [max(range(k), key=lambda j, g=g: scores[g * k + j]) for g in range(groups)]
    assert list(res.chosen) == best
    assert list(res.pixels) == [plain.pixels[g * k + j] for g, j in enumerate(best)]
    assert list(res.scores) == pytest.approx(
        [scores[g * k + j] for g, j in enumerate(best)], abs=1e-5
    )
    pngs = await detok.Detokenize(tokenizer_pb2.DetokenizeRequest(grids=grids, rerank=rerank))
    assert len(pngs.images) == groups and list(pngs.chosen) == best  # PNGs rerank alike


async def test_a_batch_of_reranked_and_plain_requests_answers_each_as_alone(detok, prior):
    states, _ = await states_and_embedding(prior, "rocket")
    other, _ = await states_and_embedding(prior, "a green tree")
    requests = [
        tokenizer_pb2.DetokenizeRequest(
            grids=random_grids(detok, 8, seed=2),
            return_pixels=True,
            rerank=tokenizer_pb2.Rerank(text_states=states, candidates=4),
        ),
        tokenizer_pb2.DetokenizeRequest(grids=random_grids(detok, 3, seed=3), return_pixels=True),
        tokenizer_pb2.DetokenizeRequest(
            grids=random_grids(detok, 6, seed=4),
            rerank=tokenizer_pb2.Rerank(text_states=other, candidates=2),
        ),
    ]
    items = [
        DecodeItem(*detok._parse(r), r.return_pixels, detok._parse_rerank(r, len(r.grids)))
        for r in requests
    ]
    together = detok._decode_many(items)
    assert [len(r.pixels) + len(r.images) for r in together] == [2, 3, 3]
    for item, got in zip(items, together, strict=True):
        alone = detok._decode_many([item])[0]
        assert list(got.chosen) == list(alone.chosen)
        assert list(got.pixels) == list(alone.pixels) and list(got.images) == list(alone.images)


@pytest.mark.parametrize(
    ("items", "candidates", "message"),
    [
        (4, 0, "rerank.candidates"),
        (9, 9, "rerank.candidates"),
        (5, 2, "groups of rerank.candidates=2"),
    ],
)
async def test_bad_rerank_requests_are_invalid_arguments(detok, prior, items, candidates, message):
    states, _ = await states_and_embedding(prior, "sun")
    req = tokenizer_pb2.DetokenizeRequest(
        grids=random_grids(detok, items, seed=5),
        rerank=tokenizer_pb2.Rerank(text_states=states, candidates=candidates),
    )
    with pytest.raises(InvalidArgument, match=message):
        await detok.Detokenize(req)


async def test_bad_states_and_a_bundle_without_a_reranker_are_refused(detok, prior):
    grids = random_grids(detok, 2, seed=6)
    bad = tokenizer_pb2.Rerank(candidates=2)
    bad.text_states.shape.extend([3, 7])
    with pytest.raises(InvalidArgument, match="text_states"):
        await detok.Detokenize(tokenizer_pb2.DetokenizeRequest(grids=grids, rerank=bad))
    states, _ = await states_and_embedding(prior, "sun")
    no_clip = copy.copy(detok)
    no_clip.clip = None  # what a bundle with an imported CLIP or LM (or none) loads
    req = tokenizer_pb2.DetokenizeRequest(
        grids=grids, rerank=tokenizer_pb2.Rerank(text_states=states, candidates=2)
    )
    with pytest.raises(InvalidArgument, match="Tessera's own"):
        await no_clip.Detokenize(req)
