"""The Prior deployment class in-process: embeddings, and the MiniLM states it hands on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument
from tessera.common.images import encode_png, pixels_to_proto
from tessera.common.protos import text_states_from_proto
from tessera.prior.deployment import Prior
from tessera.v1 import prior_pb2


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    build_random_bundle(bundle, "tiny", tiny=True, seed=0)
    return Prior.func_or_class(str(bundle), "cpu")


async def test_embed_text_returns_each_texts_states_only_when_asked(prior):
    texts = ["a red heart", "grinning face with big eyes"]
    plain = await prior.EmbedText(prior_pb2.EmbedTextRequest(texts=texts))
    asked = await prior.EmbedText(prior_pb2.EmbedTextRequest(texts=texts, return_states=True))
    assert not plain.text_states and list(asked.embeddings) == list(plain.embeddings)
    encoded = prior.text_encoder.encode(texts)
    for i, msg in enumerate(asked.text_states):
        tokens = int(encoded.mask[i].sum())
        assert list(msg.shape) == [tokens, 384]
        back = text_states_from_proto(msg)
        assert torch.equal(back.states[0], encoded.states[i])
        assert torch.equal(back.mask[0], encoded.mask[i])
        assert torch.allclose(back.pooled[0], encoded.pooled[i])


async def test_sample_prior_hands_on_the_prompts_states(prior):
    req = prior_pb2.SamplePriorRequest(prompt="a red heart", n=2, seed=1, steps=2)
    plain = await prior.SamplePrior(req)
    req.return_states = True
    asked = await prior.SamplePrior(req)
    assert list(asked.embeddings) == list(plain.embeddings) and not plain.HasField("text_states")
    expected = prior.text_encoder.encode(["a red heart"])
    assert torch.equal(text_states_from_proto(asked.text_states).states, expected.states)


async def test_concurrent_embed_requests_batch_into_one_call_and_each_gets_its_own(prior):
    """EmbedText / EmbedImage batch concurrent requests (serve.batch hands the batch
    function every queued item); a request's answer does not depend on its company."""
    texts = [["a red heart"], ["grinning face", "blue star", "green apple"], ["a cat"]]
    items = [(t, i == 1) for i, t in enumerate(texts)]
    batched = prior._embed_text_many(items)
    for (t, states), got in zip(items, batched, strict=True):
        alone = prior._embed_text_many([(t, states)])[0]
        assert len(got.embeddings) == len(t) and len(got.text_states) == (len(t) if states else 0)
        for a, b in zip(got.embeddings, alone.embeddings, strict=True):
            assert torch.allclose(torch.tensor(a.values), torch.tensor(b.values), atol=1e-6)
        assert list(got.text_states) == list(alone.text_states)

    rng = np.random.default_rng(0)
    size = prior.image_size
    images = [
        [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)] for n in (1, 3)
    ]
    batched = prior._embed_image_many([(a,) for a in images])
    for arrays, got in zip(images, batched, strict=True):
        alone = prior._embed_image_many([(arrays,)])[0]
        assert len(got.embeddings) == len(arrays)
        for a, b in zip(got.embeddings, alone.embeddings, strict=True):
            assert torch.allclose(torch.tensor(a.values), torch.tensor(b.values), atol=1e-5)


async def test_embed_image_takes_raw_pixels_as_it_takes_pngs(prior):
    """The ar route's reranking sends raw pixels: the same embeddings as the PNGs, and a
    different size is resized the same way."""
    rng = np.random.default_rng(1)
    size = prior.image_size
    arrays = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (size, size, 2 * size)]
    pngs = await prior.EmbedImage(
        prior_pb2.EmbedImageRequest(images=[encode_png(a) for a in arrays])
    )
    raw = await prior.EmbedImage(
        prior_pb2.EmbedImageRequest(pixels=[pixels_to_proto(a) for a in arrays])
    )
    for a, b in zip(pngs.embeddings, raw.embeddings, strict=True):
        assert torch.allclose(torch.tensor(a.values), torch.tensor(b.values), atol=1e-2)
    assert list(pngs.embeddings[:2]) == list(raw.embeddings[:2])  # same size: identical
    both = prior_pb2.EmbedImageRequest(
        images=[encode_png(arrays[0])], pixels=[pixels_to_proto(arrays[0])]
    )
    with pytest.raises(InvalidArgument, match="not both"):
        await prior.EmbedImage(both)
    short = pixels_to_proto(arrays[0])
    short.rgb = short.rgb[:-1]
    with pytest.raises(InvalidArgument, match="bytes"):
        await prior.EmbedImage(prior_pb2.EmbedImageRequest(pixels=[short]))
