"""The latent UNet: shapes, what its conditions do, save/load, and that it can learn."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import fake_image_emb, fake_text, random_decoder

from tessera.common.checkpoint import load_component, save_component
from tessera.decoder.model import DecoderConfig, LatentDecoder
from tessera.decoder.schedulers import DDPMScheduler


def inputs(model: LatentDecoder, n: int = 3, seed: int = 0):
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cfg.latent_channels, cfg.grid_size, cfg.grid_size, generator=gen)
    t = torch.randint(0, cfg.num_train_timesteps, (n,), generator=gen)
    return x, t, fake_image_emb(n, cfg.clip_dim, seed), fake_text(n, seed)


@pytest.mark.parametrize(
    "overrides", [{}, {"grid_size": 16}, {"grid_size": 16, "widths": (16, 32, 32)}]
)
def test_forward_shapes(overrides):
    model = random_decoder(**overrides)
    x, t, emb, text = inputs(model)
    out = model(x, t, emb, text.states, text.mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_fresh_model_outputs_zero():
    """The output conv starts at zero, so an untrained decoder predicts exactly 0 (a stable
    start for both epsilon and v)."""
    model = LatentDecoder(DecoderConfig.tiny())
    x, t, emb, text = inputs(model)
    assert torch.count_nonzero(model(x, t, emb, text.states, text.mask)) == 0


def test_bad_grid_rejected():
    with pytest.raises(ValueError):
        DecoderConfig.tiny(grid_size=6, widths=(16, 32, 32))


def test_conditions_matter_and_padding_does_not(model):
    x, t, emb, text = inputs(model)
    base = model(x, t, emb, text.states, text.mask)
    other_emb = fake_image_emb(3, model.config.clip_dim, seed=9)
    assert not torch.allclose(base, model(x, t, other_emb, text.states, text.mask))
    other_text = fake_text(3, seed=9)
    assert not torch.allclose(base, model(x, t, emb, other_text.states, other_text.mask))
    assert not torch.allclose(base, model(x, t + 1, emb, text.states, text.mask))
    # Masked-out (padding) positions of the text states must not change anything.
    noisy = torch.where(text.mask[..., None], text.states, torch.randn_like(text.states))
    assert torch.allclose(base, model(x, t, emb, noisy, text.mask), atol=1e-5)


def test_drop_flags_use_null_embeddings(model):
    x, t, emb, text = inputs(model)
    yes = torch.ones(3, dtype=torch.bool)
    # With both conditions dropped, the real conditions no longer matter.
    a = model(x, t, emb, text.states, text.mask, drop_image=yes, drop_text=yes)
    other = fake_text(3, seed=4)
    b = model(x, t, -emb, other.states, other.mask, drop_image=yes, drop_text=yes)
    assert torch.allclose(a, b, atol=1e-5)
    # text=None is the same as dropping the text.
    c = model(x, t, emb, None, None)
    d = model(x, t, emb, text.states, text.mask, drop_text=yes)
    assert torch.allclose(c, d, atol=1e-5)
    # Dropping is per row: row 0 dropped, rows 1.. unchanged.
    row0 = torch.tensor([True, False, False])
    e = model(x, t, emb, text.states, text.mask, drop_image=row0)
    full = model(x, t, emb, text.states, text.mask)
    assert torch.allclose(e[1:], full[1:], atol=1e-5) and not torch.allclose(e[0], full[0])


def test_save_load_round_trip(tmp_path, model):
    model.config.latent_scale, model.config.latent_shift = 0.5, 0.25
    save_component(tmp_path / "decoder", model, model.config)
    loaded = load_component(tmp_path / "decoder")
    assert isinstance(loaded, LatentDecoder)
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)
    assert loaded.config.widths == model.config.widths  # a tuple again after JSON
    x, t, emb, text = inputs(model)
    with torch.no_grad():
        assert torch.equal(
            model(x, t, emb, text.states, text.mask), loaded(x, t, emb, text.states, text.mask)
        )


@pytest.mark.parametrize("prediction", ["v_prediction", "epsilon"])
def test_tiny_model_overfits_small_batch(prediction):
    torch.manual_seed(0)
    cfg = DecoderConfig.tiny(prediction_type=prediction)
    model = LatentDecoder(cfg)
    sched = DDPMScheduler(**cfg.scheduler_kwargs())
    x0 = torch.randn(4, cfg.latent_channels, cfg.grid_size, cfg.grid_size)
    emb, text = fake_image_emb(4, cfg.clip_dim, 1), fake_text(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    # Fixed noise and timesteps: the loss on this one batch must go to ~0.
    noise = torch.randn_like(x0)
    t = torch.tensor([5, 30, 60, 90])
    xt = sched.add_noise(x0, noise, t)
    target = sched.training_target(x0, noise, t)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(xt, t, emb, text.states, text.mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])
