"""Continuous batching: same tokens as batch sampling, joins mid-flight, leaves early."""

from __future__ import annotations

import threading

import pytest
import torch

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.lm.engine import ContinuousSampler
from tessera.lm.model import ImageGPT, LMConfig
from tessera.lm.sampling import SamplingParams, sample_tokens
from tests.unit.lm.lm_helpers import fake_text

TIMEOUT = 60


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # an untrained model has near-uniform logits: every draw depends on the exact numbers
    return ImageGPT(LMConfig.tiny(vocab_size=64, grid_size=4)).eval()


@pytest.fixture()
def engine(model):
    sampler = ContinuousSampler(model, max_rows=8)
    yield sampler
    sampler.close()


def rows(text: TextBatch, i: int, n: int = 1) -> TextBatch:
    return TextBatch(text.states[i : i + n], text.mask[i : i + n], text.pooled[i : i + n])


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_lone_request_matches_sample_tokens(model, engine, guidance):
    text = fake_text(3, seed=1)
    params = [SamplingParams(seed=s, guidance_scale=guidance) for s in (5, 6, 7)]
    expected = sample_tokens(model, text, params)
    got = engine.submit(text, params).result(TIMEOUT)
    assert torch.equal(got, expected)


def test_a_late_request_joins_the_running_batch_and_each_leaves_when_done(model, engine):
    text = fake_text(2, seed=2)
    first_params = [SamplingParams(seed=11, guidance_scale=3.0)]
    late_params = [SamplingParams(seed=12, guidance_scale=1.0)]
    late_future = {}
    late_done_when_first_finished = []

    def first_progress(done, grids):
        if done == 4 and "f" not in late_future:  # a quarter in: the second request arrives
            late_future["f"] = engine.submit(rows(text, 1), late_params, progress_every=1)
        if done == 16:
            late_done_when_first_finished.append(late_future["f"].done())
        return True

    first = engine.submit(rows(text, 0), first_params, first_progress, progress_every=1)
    got_first = first.result(TIMEOUT)
    got_late = late_future["f"].result(TIMEOUT)
    # same tokens as sampling each alone
    assert torch.equal(got_first, sample_tokens(model, rows(text, 0), first_params))
    assert torch.equal(got_late, sample_tokens(model, rows(text, 1), late_params))
    # they ran together (2 guided rows + 1) and the first left before the late one finished
    assert engine.max_running == 3
    assert late_done_when_first_finished == [False]
    # 16 tokens: the first took 15 decode steps, the late one ran 15 more, 4+ of them shared
    assert engine.steps < 30


def test_static_mode_holds_a_late_request_until_the_batch_drains(model):
    """The bench's baseline: same tokens, but no joining mid-flight."""
    sampler = ContinuousSampler(model, max_rows=8, static=True)
    text = fake_text(2, seed=2)
    params = [SamplingParams(seed=11, guidance_scale=1.0)], [SamplingParams(seed=12)]
    late = {}

    def first_progress(done, grids):
        if done == 4 and "f" not in late:
            late["f"] = sampler.submit(rows(text, 1), params[1])
        return True

    try:
        first = sampler.submit(rows(text, 0), params[0], first_progress, progress_every=1)
        got_first, got_late = first.result(TIMEOUT), None
        got_late = late["f"].result(TIMEOUT)
    finally:
        sampler.close()
    assert torch.equal(got_first, sample_tokens(model, rows(text, 0), params[0]))
    assert torch.equal(got_late, sample_tokens(model, rows(text, 1), params[1]))
    assert sampler.max_running == 2  # one row at a time, never both
    assert sampler.steps == 2 * 15  # 16 tokens each: a prefill draw then 15 decode steps


def test_many_concurrent_requests_from_threads(model, engine):
    text = fake_text(6, seed=3)
    params = [SamplingParams(seed=20 + i, guidance_scale=2.0) for i in range(6)]
    results: dict[int, torch.Tensor] = {}

    def client(i):
        results[i] = engine.submit(rows(text, i), params[i : i + 1]).result(TIMEOUT)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    expected = sample_tokens(model, text, params)
    for i in range(6):
        assert torch.equal(results[i][0], expected[i])


def test_cancel_drops_only_that_request(model, engine):
    text = fake_text(2, seed=4)
    params = [SamplingParams(seed=1)]
    cancelled = engine.submit(rows(text, 0), params, lambda done, g: done < 8, progress_every=4)
    other = engine.submit(rows(text, 1), params)
    with pytest.raises(Cancelled, match="cancelled after 8"):
        cancelled.result(TIMEOUT)
    assert torch.equal(other.result(TIMEOUT), sample_tokens(model, rows(text, 1), params))


def test_partial_grids_show_unsampled_cells_as_minus_one(engine):
    seen = []
    engine.submit(
        fake_text(1, seed=5), [SamplingParams()], lambda d, g: seen.append((d, g)), 8
    ).result(TIMEOUT)
    assert [d for d, _ in seen] == [8, 16]
    assert (seen[0][1].view(-1)[8:] == -1).all() and (seen[0][1].view(-1)[:8] >= 0).all()


def test_a_request_larger_than_the_pool_is_refused(engine):
    text = fake_text(5, seed=6)
    with pytest.raises(InvalidArgument, match="cache rows"):
        engine.submit(text, [SamplingParams(guidance_scale=3.0)] * 5)  # 10 rows > 8


def test_bad_params_are_refused(engine):
    with pytest.raises(InvalidArgument, match="temperature"):
        engine.submit(fake_text(1, seed=7), [SamplingParams(temperature=0.0)])


def test_future_cancel_drops_the_request_and_spares_the_others(model, engine):
    text = fake_text(2, seed=8)
    params = [SamplingParams(seed=2)]
    gate = threading.Event()

    def hold(done, grids):  # keeps the first request running until it has been cancelled
        gate.wait(TIMEOUT)
        return True

    doomed = engine.submit(rows(text, 0), params, hold, progress_every=1)
    other = engine.submit(rows(text, 1), params)
    assert doomed.cancel()
    gate.set()
    assert torch.equal(other.result(TIMEOUT), sample_tokens(model, rows(text, 1), params))
    for _ in range(500):
        if engine.running_rows == 0:
            break
        threading.Event().wait(0.01)
    assert engine.running_rows == 0


def test_a_reused_row_forgets_its_previous_occupants_padding(model, engine):
    # a long prompt, then a short one in the same rows: the short one's image slots sit where
    # the long one's text was; none of the long one's key mask may leak into them
    long_text, short_text = fake_text(1, seed=9), fake_text(1, seed=10)
    long_text.mask[:] = torch.arange(32) < 30
    short_text.mask[:] = torch.arange(32) < 2
    long_text.mask[:, 30:] = False
    first = engine.submit(long_text, [SamplingParams(seed=1)]).result(TIMEOUT)
    second = engine.submit(short_text, [SamplingParams(seed=1)]).result(TIMEOUT)
    assert torch.equal(first, sample_tokens(model, long_text, [SamplingParams(seed=1)]))
    assert torch.equal(second, sample_tokens(model, short_text, [SamplingParams(seed=1)]))


def test_rows_freed_in_the_middle_are_refilled_from_the_end(model, engine):
    # A (two guided images: 4 rows) runs; B (1 row) and C (a guided and a plain image: 3 rows)
    # join and fill the pool; B stops early, so a hole opens in the middle and C's last row
    # moves into it; D (1 row) then joins. Everyone still gets exactly their own tokens.
    text = fake_text(6, seed=12)
    a_params = [SamplingParams(seed=1, guidance_scale=2.0), SamplingParams(seed=2)]
    a_params[1].guidance_scale = 3.0
    b_params = [SamplingParams(seed=3, guidance_scale=1.0)]
    c_params = [
        SamplingParams(seed=4, guidance_scale=2.5),
        SamplingParams(seed=5, guidance_scale=1.0),
    ]
    d_params = [SamplingParams(seed=6, guidance_scale=1.0)]
    later: dict[str, object] = {}

    def a_progress(done, grids):
        if done == 2:
            later["b"] = engine.submit(rows(text, 2), b_params, lambda d, g: d < 4, 1)
            later["c"] = engine.submit(rows(text, 3, 2), c_params)
        if done == 6:
            later["d"] = engine.submit(rows(text, 5), d_params)
        return True

    a = engine.submit(rows(text, 0, 2), a_params, a_progress, progress_every=1)
    assert torch.equal(a.result(TIMEOUT), sample_tokens(model, rows(text, 0, 2), a_params))
    with pytest.raises(Cancelled):
        later["b"].result(TIMEOUT)
    assert torch.equal(later["c"].result(TIMEOUT), sample_tokens(model, rows(text, 3, 2), c_params))
    assert torch.equal(later["d"].result(TIMEOUT), sample_tokens(model, rows(text, 5), d_params))
    assert engine.max_running == 8


def test_a_failed_step_fails_the_running_batch_and_the_next_request_is_served(
    model, engine, monkeypatch
):
    text = fake_text(2, seed=13)
    params = [SamplingParams(seed=3)]
    decode = model.decode_rows
    calls = {"n": 0}

    def decode_or_fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("decode broke")
        return decode(*args, **kwargs)

    monkeypatch.setattr(model, "decode_rows", decode_or_fail)
    with pytest.raises(RuntimeError, match="decode broke"):
        engine.submit(rows(text, 0), params).result(TIMEOUT)
    assert engine.running_rows == 0
    assert torch.equal(
        engine.submit(rows(text, 1), params).result(TIMEOUT),
        sample_tokens(model, rows(text, 1), params),
    )


def test_a_new_row_pool_is_allocated_when_the_sampler_is_idle(model, engine):
    engine.set_max_rows(4)
    text = fake_text(1, seed=14)
    params = [SamplingParams(seed=5, guidance_scale=2.0)]
    got = engine.submit(text, params).result(TIMEOUT)  # admitted after the resize
    assert engine.max_rows == 4 and engine.cache.k[0].shape[0] == 4
    assert torch.equal(got, sample_tokens(model, text, params))
