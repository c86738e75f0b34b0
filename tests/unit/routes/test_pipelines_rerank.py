"""The ar route's CLIP reranking, in-process on a tiny random bundle."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import Cancelled, InvalidArgument
from tessera.routes.local import local_pipelines
from tessera.routes.pipelines import Pipelines, candidate_seed
from tessera.routes.schemas import GenerationParams
from tessera.v1 import prior_pb2


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    build_random_bundle(bundle, "tiny", tiny=True, seed=0)
    return local_pipelines(bundle, "cpu")


def ar(prompt: str, seed: int, n: int, candidates: int) -> GenerationParams:
    return GenerationParams(prompt=prompt, route="ar", seed=seed, n=n, candidates=candidates)


async def test_each_image_is_its_best_scored_candidate(pipelines):
    prompt, seed, n, k = "a red heart", 7, 2, 3
    reranked = await pipelines.generate(ar(prompt, seed, n, k))
    assert reranked.seed == seed and len(reranked.images) == n
    # candidate j of image i is image i of what candidates=1 gives at candidate_seed(seed, j)
    candidates = [
        (await pipelines.generate(ar(prompt, candidate_seed(seed, j), n, 1))).images
        for j in range(k)
    ]
    text = await pipelines.handles.prior.EmbedText.remote(
        prior_pb2.EmbedTextRequest(texts=[prompt])
    )
    t = text.embeddings[0].values
    for i in range(n):
        pngs = [candidates[j][i].png for j in range(k)]
        emb = await pipelines.handles.prior.EmbedImage.remote(
            prior_pb2.EmbedImageRequest(images=pngs)
        )
        scores = [sum(a * b for a, b in zip(e.values, t, strict=True)) for e in emb.embeddings]
        best = max(range(k), key=scores.__getitem__)
        assert reranked.images[i].png == pngs[best]


async def test_one_candidate_is_plain_sampling_and_the_default_comes_from_settings(pipelines):
    one = await pipelines.generate(ar("sun", 3, 1, 1))
    again = await pipelines.generate(ar("sun", 3, 1, 1))
    assert one.images[0].png == again.images[0].png
    plain = Pipelines(pipelines.handles, pipelines.info, ar_candidates=1)
    default = await plain.generate(GenerationParams(prompt="sun", route="ar", seed=3))
    assert default.images[0].png == one.images[0].png


def test_nearby_seeds_do_not_share_candidates():
    assert candidate_seed(5, 0) == 5  # candidate 0 is plain sampling at the request's seed
    seeds = {candidate_seed(s, j) + i for s in range(100) for j in range(1, 8) for i in range(4)}
    assert len(seeds) == 100 * 7 * 4 and not seeds & set(range(104))
    assert all(0 <= s < 2**62 + 4 for s in seeds)


async def test_more_than_sixteen_candidates_are_decoded_and_scored_in_chunks(pipelines):
    res = await pipelines.generate(ar("rocket", 1, 4, 8))  # 32 grids: two calls of 16
    assert len(res.images) == 4


async def test_reranking_without_a_clip_is_refused(pipelines):
    info = dataclasses.replace(pipelines.info, ar_rerank=False)
    no_clip = Pipelines(pipelines.handles, info)
    assert no_clip.ar_candidates == 1  # the default quietly falls back to plain sampling
    with pytest.raises(InvalidArgument, match="CLIP"):
        await no_clip.generate(ar("sun", 0, 1, 2))


class NeverDoneLM:
    """The real LM for streamed requests; unary ones (the other calls of candidates) never
    finish and count their cancellations, so the test sees whether the route stops them."""

    def __init__(self, real) -> None:
        self.real, self.cancelled = real, 0
        self.SampleTokens = self

    def options(self, **kwargs):
        return self.real.options(**kwargs)

    async def remote(self, request):
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise


async def test_a_cancelled_stream_stops_every_candidate(pipelines):
    lm = NeverDoneLM(pipelines.handles.lm)
    handles = pipelines.handles.replace(lm=lm)
    route = Pipelines(handles, pipelines.info)

    async def stop_at_first_preview(event) -> bool:
        return False

    with pytest.raises(Cancelled):  # 4 images x 4 candidates: two LM calls of 8
        await route.generate(ar("a green tree", 4, 4, 4), stop_at_first_preview)
    await asyncio.sleep(0)  # let the cancellations land
    assert lm.cancelled == 1


class CountingLM:
    """The real LM, counting unary calls and the images each asks for."""

    def __init__(self, real) -> None:
        self.real, self.calls = real, []
        self.SampleTokens = self

    def options(self, **kwargs):
        return self.real.options(**kwargs)

    def remote(self, request):
        self.calls.append(len(request.seeds) or request.n)
        return self.real.SampleTokens.remote(request)


async def test_the_candidates_of_a_request_share_lm_calls_of_up_to_eight_images(pipelines):
    lm = CountingLM(pipelines.handles.lm)
    route = Pipelines(pipelines.handles.replace(lm=lm), pipelines.info)
    await route.generate(ar("sun", 2, 1, 4))
    await route.generate(ar("sun", 2, 3, 4))
    assert lm.calls == [4, 8, 4]


async def test_a_streamed_request_reranks_as_a_unary_one(pipelines):
    """The stream's last LM event carries the prompt's states, so reranking needs no extra
    call and picks what the unary route picks."""
    params = ar("a red heart", 11, 2, 3)
    unary = await pipelines.generate(params)
    previews = []

    async def keep(event) -> bool:
        previews.append(event)
        return True

    streamed = await pipelines.generate(params, keep)
    assert previews and [i.png for i in streamed.images] == [i.png for i in unary.images]
