"""Step-level batching: requests at different steps share UNet calls, results unchanged."""

from __future__ import annotations

import pytest
import torch

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.decoder.engine import DenoiseBatcher
from tessera.decoder.sampling import sample_latents
from tests.unit.decoder.conftest import fake_image_emb, fake_text, random_decoder

TIMEOUT = 60


@pytest.fixture(scope="module")
def model():
    return random_decoder(seed=3)


@pytest.fixture()
def batcher(model):
    engine = DenoiseBatcher(model, max_rows=8)
    yield engine
    engine.close()


def rows(text: TextBatch, i: int, n: int = 1) -> TextBatch:
    return TextBatch(text.states[i : i + n], text.mask[i : i + n], text.pooled[i : i + n])


@pytest.mark.parametrize(
    ("guidance", "scheduler"), [(3.0, "ddim"), (1.0, "ddpm"), (0.0, "ddim"), (3.0, "dpmsolver++")]
)
def test_a_lone_request_matches_sample_latents(model, batcher, guidance, scheduler):
    emb, text = fake_image_emb(2, model.config.clip_dim, seed=1), fake_text(2, seed=1)
    kwargs = dict(seeds=[4, 5], steps=6, guidance_scale=guidance, scheduler=scheduler)
    expected = sample_latents(model, emb, text, **kwargs)
    got = batcher.submit(emb, text, **kwargs).result(TIMEOUT)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_requests_at_different_steps_share_calls_and_leave_when_done(model, batcher):
    emb, text = fake_image_emb(2, model.config.clip_dim, seed=2), fake_text(2, seed=2)
    late = {}

    def first_progress(step, total, x0):
        if step == 3 and "f" not in late:  # the second request arrives at step 3 of 10
            late["f"] = batcher.submit(emb[1:], rows(text, 1), seeds=[8], steps=4)
        if step == total:
            late["done_when_first_finished"] = late["f"].done()
        return True

    first = batcher.submit(
        emb[:1], rows(text, 0), seeds=[7], steps=10, on_progress=first_progress, progress_every=1
    )
    got_first = first.result(TIMEOUT)
    got_late = late["f"].result(TIMEOUT)
    # the short late request joined at step 4 of the long one and finished first
    assert late["done_when_first_finished"] is True
    assert batcher.calls == 10  # 4 of the late request's steps rode along: 10 calls, not 14
    assert batcher.max_running == 4  # two guided requests: 2 rows each
    one = dict(guidance_scale=None, scheduler="ddim")
    torch.testing.assert_close(
        got_first, sample_latents(model, emb[:1], rows(text, 0), seeds=[7], steps=10, **one),
        atol=1e-5, rtol=1e-4,
    )  # fmt: skip
    torch.testing.assert_close(
        got_late, sample_latents(model, emb[1:], rows(text, 1), seeds=[8], steps=4, **one),
        atol=1e-5, rtol=1e-4,
    )  # fmt: skip


def test_previews_and_cancel(model, batcher):
    emb, text = fake_image_emb(1, model.config.clip_dim, seed=3), fake_text(1, seed=3)
    seen = []

    def progress(step, total, x0):
        seen.append((step, total, tuple(x0.shape)))
        return step < 4

    future = batcher.submit(emb, text, seeds=[1], steps=8, on_progress=progress, progress_every=2)
    with pytest.raises(Cancelled, match="step 4/8"):
        future.result(TIMEOUT)
    shape = (1, model.config.latent_channels, model.config.grid_size, model.config.grid_size)
    assert seen == [(2, 8, shape), (4, 8, shape)]
    assert batcher.running_rows == 0


def test_too_many_rows_and_bad_steps_are_refused(model, batcher):
    emb, text = fake_image_emb(5, model.config.clip_dim, seed=4), fake_text(1, seed=4)
    with pytest.raises(InvalidArgument, match="rows"):
        batcher.submit(emb, text, seeds=list(range(5)), guidance_scale=2.0)  # 10 rows > 8
    with pytest.raises(InvalidArgument, match="steps"):
        batcher.submit(emb[:1], text, seeds=[0], steps=0)


def test_future_cancel_drops_the_request(model, batcher):
    import threading

    emb, text = fake_image_emb(2, model.config.clip_dim, seed=5), fake_text(2, seed=5)
    gate = threading.Event()
    doomed = batcher.submit(
        emb[:1], rows(text, 0), seeds=[1], steps=20,
        on_progress=lambda *_: gate.wait(TIMEOUT), progress_every=1,
    )  # fmt: skip
    other = batcher.submit(emb[1:], rows(text, 1), seeds=[2], steps=3)
    assert doomed.cancel()
    gate.set()
    assert other.result(TIMEOUT).shape[0] == 1
    for _ in range(500):
        if batcher.running_rows == 0:
            break
        gate.wait(0.01)
    assert batcher.running_rows == 0
