"""sample_latents: guidance semantics, seeds, progress/cancel, validation, and the EMA."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import fake_image_emb, fake_text, random_decoder

from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.decoder.model import DecoderConfig, LatentDecoder
from tessera.decoder.sampling import EMA, guided_output, sample_latents
from tessera.decoder.schedulers import DDPMScheduler


def conditions(model: LatentDecoder, n: int, seed: int = 0):
    return fake_image_emb(n, model.config.clip_dim, seed), fake_text(n, seed)


def rows(text: TextBatch, idx: slice) -> TextBatch:
    return TextBatch(text.states[idx], text.mask[idx], text.pooled[idx])


# --- guidance -----------------------------------------------------------------------------
def test_guidance_scale_semantics(model):
    emb, text = conditions(model, 3)
    x = torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 50, 90])
    yes = torch.ones(3, dtype=torch.bool)
    with torch.no_grad():
        cond = model(x, t, emb, text.states, text.mask)
        uncond = model(x, t, emb, text.states, text.mask, drop_image=yes, drop_text=yes)
        g = {s: guided_output(model, x, t, emb, text.states, text.mask, s) for s in (0, 1, 2.5)}
    assert not torch.allclose(cond, uncond, atol=1e-3)
    assert torch.allclose(g[1], cond, atol=1e-6)
    assert torch.allclose(g[0], uncond, atol=1e-6)
    # The doubled-batch path: u + g (c - u).
    assert torch.allclose(g[2.5], uncond + 2.5 * (cond - uncond), atol=1e-5)


def test_guidance_zero_ignores_the_condition(model):
    emb, text = conditions(model, 2)
    other_emb, other_text = conditions(model, 2, seed=7)
    kw = dict(seeds=[1, 2], steps=5, guidance_scale=0.0)
    a = sample_latents(model, emb, text, **kw)
    b = sample_latents(model, other_emb, other_text, **kw)
    assert torch.allclose(a, b, atol=1e-5)
    c = sample_latents(model, emb, text, **{**kw, "guidance_scale": 1.0})
    assert not torch.allclose(a, c, atol=1e-3)


def test_guidance_one_never_uses_the_null_embeddings(model):
    emb, text = conditions(model, 2)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.null_image.add_(1.0)
        changed.null_text.add_(1.0)
    kw = dict(seeds=[1, 2], steps=5, guidance_scale=1.0)
    assert torch.equal(
        sample_latents(model, emb, text, **kw), sample_latents(changed, emb, text, **kw)
    )
    kw["guidance_scale"] = 3.0
    assert not torch.allclose(
        sample_latents(model, emb, text, **kw), sample_latents(changed, emb, text, **kw)
    )


# --- seeds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpmsolver++"])
def test_seeds_deterministic_and_batch_independent(model, scheduler):
    emb, text = conditions(model, 3)
    kw = dict(steps=6, guidance_scale=2.0, scheduler=scheduler)
    a = sample_latents(model, emb, text, seeds=[11, 12, 13], **kw)
    b = sample_latents(model, emb, text, seeds=[11, 12, 13], **kw)
    assert torch.equal(a, b)
    assert a.shape == (3, 4, 8, 8)
    # Row 1 alone, or in another batch at another position, gives the same latents.
    alone = sample_latents(model, emb[1:2], rows(text, slice(1, 2)), seeds=[12], **kw)
    assert torch.allclose(alone[0], a[1], atol=1e-4)
    swapped = sample_latents(
        model,
        emb.flip(0),
        TextBatch(text.states.flip(0), text.mask.flip(0), text.pooled.flip(0)),
        seeds=[13, 12, 11],
        **kw,
    )
    assert torch.allclose(swapped.flip(0), a, atol=1e-4)
    # Another seed, other latents.
    c = sample_latents(model, emb, text, seeds=[11, 99, 13], **kw)
    assert torch.allclose(c[0], a[0], atol=1e-4) and not torch.allclose(c[1], a[1], atol=1e-2)


def test_ddpm_is_stochastic_per_step_ddim_is_not(model):
    """Same starting noise, different step noise: DDPM differs, DDIM (eta=0) doesn't care."""
    emb, text = conditions(model, 1)
    ddpm = sample_latents(model, emb, text, seeds=[3], steps=5, scheduler="ddpm")
    ddim = sample_latents(model, emb, text, seeds=[3], steps=5, scheduler="ddim")
    ddim_eta = sample_latents(model, emb, text, seeds=[3], steps=5, scheduler="ddim", eta=1.0)
    assert not torch.allclose(ddpm, ddim, atol=1e-3)
    assert torch.allclose(ddim_eta, ddpm, atol=1e-4)  # eta=1 is the DDPM posterior


def test_shared_or_missing_text(model):
    emb, text = conditions(model, 3)
    one = rows(text, slice(0, 1))
    repeated = TextBatch(
        one.states.expand(3, -1, -1), one.mask.expand(3, -1), one.pooled.expand(3, -1)
    )
    kw = dict(seeds=[1, 2, 3], steps=4, guidance_scale=2.0)
    assert torch.allclose(
        sample_latents(model, emb, one, **kw), sample_latents(model, emb, repeated, **kw), atol=1e-5
    )
    assert sample_latents(model, emb, None, **kw).shape == (3, 4, 8, 8)


def test_latents_are_returned_in_vq_space():
    plain = random_decoder(seed=3)
    scaled = random_decoder(seed=3, latent_scale=2.0, latent_shift=3.0)
    emb, text = conditions(plain, 2)
    kw = dict(seeds=[1, 2], steps=4)
    a, b = sample_latents(plain, emb, text, **kw), sample_latents(scaled, emb, text, **kw)
    assert torch.allclose(b, a / 2.0 + 3.0, atol=1e-5)


# --- progress and cancel --------------------------------------------------------------------
def test_progress_every_and_previews(model):
    emb, text = conditions(model, 2)
    calls = []

    def on_progress(step, total, x0):
        calls.append((step, total, tuple(x0.shape)))
        return True

    out = sample_latents(
        model, emb, text, seeds=[1, 2], steps=10, progress_every=3, on_progress=on_progress
    )
    assert [c[0] for c in calls] == [3, 6, 9, 10]
    assert all(c[1] == 10 and c[2] == (2, 4, 8, 8) for c in calls)
    assert out.shape == (2, 4, 8, 8)


def test_cancel(model):
    emb, text = conditions(model, 1)
    seen = []

    def stop_at_4(step, total, x0):
        seen.append(step)
        return step < 4

    with pytest.raises(Cancelled):
        sample_latents(
            model, emb, text, seeds=[1], steps=10, progress_every=2, on_progress=stop_at_4
        )
    assert seen == [2, 4]


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 101},  # tiny config trains 100 timesteps
        {"steps": 2.5},
        {"steps": True},
        {"guidance_scale": -0.5},
        {"guidance_scale": 20.5},
        {"guidance_scale": float("nan")},
        {"scheduler": "euler"},
        {"seeds": [1]},
        {"progress_every": 0},
    ],
)
def test_invalid_arguments(model, kwargs):
    emb, text = conditions(model, 2)
    args = {"seeds": [1, 2], **kwargs}
    with pytest.raises(InvalidArgument):
        sample_latents(model, emb, text, **args)


def test_invalid_embeddings(model):
    _, text = conditions(model, 2)
    with pytest.raises(InvalidArgument):
        sample_latents(model, torch.randn(2, 7), text, seeds=[1, 2])
    with pytest.raises(InvalidArgument):
        sample_latents(model, torch.full((2, 32), float("nan")), text, seeds=[1, 2])
    with pytest.raises(InvalidArgument):  # 3 text rows for 2 embeddings
        sample_latents(model, torch.randn(2, 32), fake_text(3, 0), seeds=[1, 2])


# --- a trained model samples what it learned ------------------------------------------------
def test_memorised_latents_are_sampled_back():
    """Train a tiny decoder on 2 (embedding, text) -> latent pairs with condition dropout;
    guided DDIM and DDPM must then land near the right latent for each condition."""
    torch.manual_seed(0)
    cfg = DecoderConfig.tiny(num_train_timesteps=100, widths=(16, 32), context_dim=16)
    model = LatentDecoder(cfg)
    sched = DDPMScheduler(**cfg.scheduler_kwargs())
    targets = torch.randn(2, 4, 8, 8).clamp(-2, 2)
    emb, text = fake_image_emb(2, cfg.clip_dim, 5), fake_text(2, 5)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.arange(8) % 2
    for _ in range(100):
        x0, noise = targets[idx], torch.randn(8, 4, 8, 8)
        t = torch.randint(0, cfg.num_train_timesteps, (8,))
        drop = torch.rand(8) < 0.1
        pred = model(
            sched.add_noise(x0, noise, t),
            t,
            emb[idx],
            text.states[idx],
            text.mask[idx],
            drop_image=drop,
            drop_text=drop,
        )
        loss = torch.nn.functional.mse_loss(pred, sched.training_target(x0, noise, t))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for scheduler, steps in (("ddim", 10), ("ddpm", 100), ("dpmsolver++", 6)):
        out = sample_latents(
            model, emb, text, seeds=[1, 2], steps=steps, guidance_scale=1.0, scheduler=scheduler
        )
        err = (out - targets).pow(2).mean(dim=(1, 2, 3))
        swapped = (out - targets.flip(0)).pow(2).mean(dim=(1, 2, 3))
        assert torch.all(err < 0.15 * swapped), (scheduler, err, swapped)


# --- EMA -------------------------------------------------------------------------------------
def test_ema_tracks_weights():
    model = random_decoder()
    ema = EMA(model, decay=0.9)
    assert ema.current_decay() == pytest.approx(0.1)  # warm-up: early updates follow closely
    target = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == 0.9
    for e, p, p0 in zip(
        ema.model.parameters(), model.parameters(), target.parameters(), strict=True
    ):
        assert torch.allclose(e, p, atol=1e-4) and not torch.allclose(e, p0)
    assert all(not p.requires_grad for p in ema.model.parameters())
    # Round trip of its state.
    other = EMA(random_decoder(seed=1))
    other.load_state_dict(ema.state_dict(), ema.num_updates)
    assert other.num_updates == 200
    assert all(
        torch.equal(a, b)
        for a, b in zip(other.model.parameters(), ema.model.parameters(), strict=True)
    )
