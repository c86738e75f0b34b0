"""Step-level batching of the prior: requests at different steps share calls, results unchanged."""

from __future__ import annotations

import threading

import pytest
import torch
from prior_helpers import fake_text, rows, unit

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.prior.engine import PriorBatcher
from tessera.prior.model import DiffusionPrior, PriorConfig

D = 32
TIMEOUT = 60


@pytest.fixture(scope="module")
def prior() -> DiffusionPrior:
    torch.manual_seed(0)
    model = DiffusionPrior(PriorConfig.tiny(embed_dim=D)).eval()
    model.set_embedding_stats(unit(64, D, 100))
    return model


@pytest.fixture()
def batcher(prior):
    engine = PriorBatcher(prior, max_rows=16)
    yield engine
    engine.close()


@pytest.mark.parametrize("scale", [2.0, 1.0, 0.0])
def test_a_lone_request_matches_sample(prior, batcher, scale):
    text, temb = fake_text(2, seed=1), unit(2, D, 2)
    kw = dict(seeds=[4, 5], guidance_scale=scale, steps=6)
    expected = prior.sample(text, temb, **kw)
    got = batcher.submit(text, temb, **kw).result(TIMEOUT)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert batcher.calls == 6


def test_requests_at_different_steps_share_calls_and_leave_when_done(prior, batcher):
    # Different prompt lengths: the late request's condition is padded to the first's.
    first_text, late_text = fake_text(1, seed=3, length=12), fake_text(1, seed=4, length=5)
    first_emb, late_emb = unit(1, D, 5), unit(1, D, 6)
    late: dict = {}

    def on_step(done: int, total: int) -> bool:
        if done == 3:  # the second request arrives after step 3 of 10
            late["f"] = batcher.submit(late_text, late_emb, seeds=[8], steps=4, guidance_scale=0.0)
        if done == total:
            late["done_when_first_finished"] = late["f"].done()
        return True

    first = batcher.submit(first_text, first_emb, seeds=[7], steps=10, on_step=on_step)
    got_first, got_late = first.result(TIMEOUT), late["f"].result(TIMEOUT)
    assert late["done_when_first_finished"] is True  # joined at step 4, left after step 7
    assert batcher.calls == 10  # the late request's 4 steps rode along: 10 calls, not 14
    assert batcher.max_running == 2 * 2 + 2  # guided first (2 candidates x 2) + unguided late
    alone_first = prior.sample(first_text, first_emb, seeds=[7], steps=10)
    alone_late = prior.sample(late_text, late_emb, seeds=[8], steps=4, guidance_scale=0.0)
    torch.testing.assert_close(got_first, alone_first, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got_late, alone_late, atol=1e-5, rtol=1e-4)


def test_requests_submitted_together_each_get_their_own_result(prior, batcher):
    text, temb = fake_text(3, seed=9), unit(3, D, 10)
    gate = threading.Event()
    hold = batcher.submit(
        rows(text, [0]), temb[[0]], seeds=[1], steps=2, on_step=lambda *_: gate.wait(TIMEOUT)
    )
    futures = [batcher.submit(rows(text, [i]), temb[[i]], seeds=[20 + i], steps=5) for i in (1, 2)]
    gate.set()
    hold.result(TIMEOUT)
    for i, future in zip((1, 2), futures, strict=True):
        alone = prior.sample(rows(text, [i]), temb[[i]], seeds=[20 + i], steps=5)
        torch.testing.assert_close(future.result(TIMEOUT), alone, atol=1e-5, rtol=1e-4)
    assert batcher.calls < 2 + 5 + 5


def test_bad_requests_are_refused_before_any_work(batcher):
    text, temb = fake_text(2, seed=1), unit(2, D, 2)
    with pytest.raises(InvalidArgument, match="rows"):
        batcher.submit(fake_text(5, seed=1), unit(5, D, 2), seeds=list(range(5)))  # 5x2x2 > 16
    with pytest.raises(InvalidArgument, match="seed"):
        batcher.submit(text, temb, seeds=[1])
    with pytest.raises(InvalidArgument, match="steps"):
        batcher.submit(text, temb, seeds=[1, 2], steps=0)
    with pytest.raises(InvalidArgument, match="guidance"):
        batcher.submit(text, temb, seeds=[1, 2], guidance_scale=float("nan"))
    assert batcher.calls == 0


def test_cancel_by_future_or_by_callback(batcher):
    text, temb = fake_text(1, seed=1), unit(1, D, 2)
    stop = batcher.submit(text, temb, seeds=[1], steps=20, on_step=lambda done, _: done < 3)
    with pytest.raises(Cancelled, match="step 3/20"):
        stop.result(TIMEOUT)
    gate = threading.Event()
    held = batcher.submit(text, temb, seeds=[1], steps=20, on_step=lambda *_: gate.wait(TIMEOUT))
    assert held.cancel() or held.done()
    gate.set()
    after = batcher.submit(text, temb, seeds=[2], steps=2).result(TIMEOUT)  # still serving
    assert after.shape == (1, D)


def test_a_request_that_fails_to_start_fails_alone(prior, batcher, monkeypatch):
    text, temb = fake_text(1, seed=1), unit(1, D, 2)
    with pytest.raises(InvalidArgument, match="text tokens"):  # refused before queueing
        batcher.submit(fake_text(1, seed=1, length=40), temb, seeds=[1])
    broken, admit = fake_text(1, seed=2), batcher._admit

    def admit_or_fail(job):  # a failure while encoding one request's condition
        if job.text is broken:
            raise RuntimeError("cannot encode this condition")
        admit(job)

    monkeypatch.setattr(batcher, "_admit", admit_or_fail)
    gate = threading.Event()
    running = batcher.submit(text, temb, seeds=[3], steps=3, on_step=lambda *_: gate.wait(TIMEOUT))
    bad = batcher.submit(broken, temb, seeds=[4], steps=3)
    gate.set()
    with pytest.raises(RuntimeError, match="cannot encode"):
        bad.result(TIMEOUT)
    alone = prior.sample(text, temb, seeds=[3], steps=3)
    torch.testing.assert_close(running.result(TIMEOUT), alone, atol=1e-5, rtol=1e-4)
