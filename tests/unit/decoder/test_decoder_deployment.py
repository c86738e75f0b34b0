"""The Decoder deployment class in-process: step-level batching behind the contract."""

from __future__ import annotations

import asyncio

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument
from tessera.common.protos import embedding_to_proto, text_states_to_proto
from tessera.decoder.deployment import Decoder
from tessera.v1 import decoder_pb2
from tests.unit.decoder.conftest import fake_image_emb


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    build_random_bundle(bundle, "tiny", tiny=True, seed=0)
    replica = Decoder.func_or_class(str(bundle), "cpu")
    yield replica
    replica.engine.close()


def request(decoder, seed: int, steps: int, n: int = 2, **fields):
    emb = fake_image_emb(n, decoder.model.config.clip_dim, seed=seed)
    return decoder_pb2.SampleLatentsRequest(
        image_embeddings=[embedding_to_proto(e) for e in emb],
        prompt=f"prompt {seed}",
        seed=seed,
        steps=steps,
        **fields,
    )


def latents(response) -> list[bytes]:
    return [z.SerializeToString() for z in response.latents]


async def test_concurrent_requests_with_different_steps_share_calls(decoder):
    reqs = [request(decoder, seed=i, steps=3 + 2 * i) for i in range(4)]
    alone = [await decoder.SampleLatents(r) for r in reqs]
    calls = decoder.engine.calls
    together = await asyncio.gather(*(decoder.SampleLatents(r) for r in reqs))
    assert decoder.engine.calls - calls < sum(r.steps for r in reqs)
    for a, b in zip(alone, together, strict=True):
        assert a.seed == b.seed and len(b.latents) == 2
        assert a.latents[0].shape == b.latents[0].shape


async def test_stream_previews_then_final(decoder):
    req = decoder_pb2.SampleLatentsStreamRequest(request=request(decoder, 9, 6), stream_every=2)
    events = [e async for e in decoder.SampleLatentsStream(req)]
    assert [e.progress.step for e in events] == [2, 4, 6]
    assert events[-1].done and not events[0].done


async def test_bad_requests_are_invalid_arguments(decoder):
    with pytest.raises(InvalidArgument, match="steps"):
        await decoder.SampleLatents(request(decoder, 0, steps=5000))
    with pytest.raises(InvalidArgument, match="guidance"):
        await decoder.SampleLatents(request(decoder, 0, steps=2, guidance_scale=50.0))


async def test_text_states_from_upstream_stand_in_for_encoding_the_prompt(decoder):
    plain = await decoder.SampleLatents(request(decoder, 5, steps=3))
    given = request(decoder, 5, steps=3)
    given.text_states.CopyFrom(text_states_to_proto(decoder.text_encoder.encode(["prompt 5"])))
    assert latents(await decoder.SampleLatents(given)) == latents(plain)
    fresh = request(decoder, 6, steps=3)  # a prompt never seen: with states, never encoded
    fresh.text_states.CopyFrom(given.text_states)
    await decoder.SampleLatents(fresh)
    assert "prompt 6" not in decoder.text_encoder._cache
