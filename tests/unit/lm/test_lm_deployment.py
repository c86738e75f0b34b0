"""The LanguageModel deployment class in-process: continuous batching behind the contract."""

from __future__ import annotations

import asyncio

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument
from tessera.common.protos import text_states_to_proto
from tessera.lm.deployment import LanguageModel
from tessera.v1 import lm_pb2


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    build_random_bundle(bundle, "tiny", tiny=True, seed=0)
    replica = LanguageModel.func_or_class(str(bundle), "cpu")
    yield replica
    replica.engine.close()


def request(prompt: str, seed: int, n: int = 2, **fields) -> lm_pb2.SampleTokensRequest:
    return lm_pb2.SampleTokensRequest(prompt=prompt, n=n, seed=seed, **fields)


def stream_request(
    request: lm_pb2.SampleTokensRequest, stream_every: int = 0
) -> lm_pb2.SampleTokensStreamRequest:
    return lm_pb2.SampleTokensStreamRequest(request=request, stream_every=stream_every)


def grids(response) -> list[bytes]:
    return [g.SerializeToString() for g in response.grids]


async def test_concurrent_requests_get_what_they_would_get_alone(lm):
    prompts = [f"prompt number {i}" for i in range(6)]
    alone = [grids(await lm.SampleTokens(request(p, seed=i))) for i, p in enumerate(prompts)]
    together = await asyncio.gather(
        *(lm.SampleTokens(request(p, seed=i)) for i, p in enumerate(prompts))
    )
    assert [grids(r) for r in together] == alone
    assert lm.engine.max_running > 4  # they shared steps (each guided image takes two rows)


async def test_stream_reports_progress_and_ends_with_the_unary_answer(lm):
    req = stream_request(request("a red heart", seed=3), stream_every=4)
    events = [e async for e in lm.SampleTokensStream(req)]
    total = events[-1].progress.total_steps
    assert [e.progress.step for e in events] == list(range(4, total, 4)) + [total]
    assert events[-1].done and not any(e.done for e in events[:-1])
    assert grids(events[-1]) == grids(await lm.SampleTokens(request("a red heart", seed=3)))


async def test_closing_a_stream_early_cancels_its_sampling(lm):
    stream = lm.SampleTokensStream(stream_request(request("rocket", seed=1), stream_every=1))
    first = await stream.__anext__()
    assert first.progress.step == 1
    await stream.aclose()
    for _ in range(200):  # the sampler drops it at its next report
        if lm.engine.running_rows == 0:
            break
        await asyncio.sleep(0.01)
    assert lm.engine.running_rows == 0


async def test_bad_requests_are_invalid_arguments(lm):
    with pytest.raises(InvalidArgument, match="n must be"):
        await lm.SampleTokens(request("x", seed=0, n=99))
    with pytest.raises(InvalidArgument, match="temperature"):
        await lm.SampleTokens(request("x", seed=0, temperature=5.0))


async def test_a_negative_stream_every_is_an_invalid_argument(lm):
    calls = lm.engine.steps
    with pytest.raises(InvalidArgument, match="stream_every"):
        async for _ in lm.SampleTokensStream(stream_request(request("x", seed=0), stream_every=-1)):
            pass
    assert lm.engine.steps == calls


async def test_explicit_seeds_sample_each_image_as_its_own_seed_would(lm):
    seeds = [7, 1000, -3]
    together = await lm.SampleTokens(lm_pb2.SampleTokensRequest(prompt="a red heart", seeds=seeds))
    one_by_one = [
        grids(await lm.SampleTokens(request("a red heart", seed=s, n=1)))[0] for s in seeds
    ]
    assert grids(together) == one_by_one
    assert together.seed == 7


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seeds": list(range(9))}, "seeds must be"),
        ({"seeds": [1, 2], "seed": 1}, "leave seed unset"),
        ({"seeds": [1, 2], "n": 3}, "leave seed unset"),
    ],
)
async def test_bad_seed_lists_are_invalid_arguments(lm, fields, message):
    with pytest.raises(InvalidArgument, match=message):
        await lm.SampleTokens(lm_pb2.SampleTokensRequest(prompt="x", **fields))


async def test_text_states_from_upstream_stand_in_for_encoding_the_prompt(lm):
    plain = await lm.SampleTokens(request("a red heart", seed=4))
    given = request("a red heart", seed=4)
    given.text_states.CopyFrom(text_states_to_proto(lm.text_encoder.encode(["a red heart"])))
    assert grids(await lm.SampleTokens(given)) == grids(plain)
    other = request("a red heart", seed=4)  # the states are what conditions it, not the prompt
    other.text_states.CopyFrom(text_states_to_proto(lm.text_encoder.encode(["rocket"])))
    assert grids(await lm.SampleTokens(other)) != grids(plain)


async def test_bad_text_states_fail_before_sampling_on_both_entry_points(lm):
    bad = request("a red heart", seed=4)
    bad.text_states.shape.extend([3, 7])  # not [tokens, 384], and no values
    calls = lm.engine.steps
    with pytest.raises(InvalidArgument):
        await lm.SampleTokens(bad)
    with pytest.raises(InvalidArgument):
        async for _ in lm.SampleTokensStream(stream_request(bad)):
            pass
    assert lm.engine.steps == calls


async def test_return_states_answers_the_prompts_minilm_states_on_both_entry_points(lm):
    expected = text_states_to_proto(lm.text_encoder.encode(["a red heart"]))
    plain = await lm.SampleTokens(request("a red heart", seed=4))
    assert not plain.HasField("text_states")  # only when asked: ~12 KB a prompt
    unary = await lm.SampleTokens(request("a red heart", seed=4, return_states=True))
    assert unary.text_states == expected and grids(unary) == grids(plain)
    events = [
        e
        async for e in lm.SampleTokensStream(
            stream_request(request("a red heart", seed=4, return_states=True))
        )
    ]
    assert events[-1].text_states == expected
    assert not any(e.HasField("text_states") for e in events[:-1])
