"""The Prior deployment class in-process: embeddings, and the MiniLM states it hands on."""

from __future__ import annotations

import pytest
import torch

from tessera.bundle.init import build_random_bundle
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
