"""Diffusion prior: schedule, guidance semantics, seeds, candidates, overfit, checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from prior_helpers import fake_text, rows, unit

from tessera.common.checkpoint import load_component, save_component
from tessera.common.errors import InvalidArgument
from tessera.prior.model import DiffusionPrior, PriorConfig, select_candidates
from tessera.prior.scheduler import PriorDDIMScheduler, cosine_alphas_cumprod

D = 32


def make_prior(seed: int = 0, **overrides) -> DiffusionPrior:
    torch.manual_seed(seed)
    prior = DiffusionPrior(PriorConfig.tiny(embed_dim=D, **overrides)).eval()
    prior.set_embedding_stats(unit(64, D, seed + 100))
    return prior


@pytest.fixture(scope="module")
def overfit() -> tuple[DiffusionPrior, object, torch.Tensor, torch.Tensor, list[float]]:
    """A tiny prior trained to map 4 captions to 4 image embeddings."""
    prior = make_prior(0, p_uncond=0.1)
    text, temb, target = fake_text(4, seed=1), unit(4, D, 2), unit(4, D, 3)
    prior.set_embedding_stats(target)
    rep = [i for _ in range(16) for i in range(4)]  # 64 rows: many timesteps per step
    batch = rows(text, rep)
    opt = torch.optim.AdamW(prior.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    prior.train()
    losses = []
    for _ in range(250):
        loss = prior.loss(target[rep], batch.states, batch.mask, temb[rep], generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return prior.eval(), text, temb, target, losses


def test_cosine_schedule_and_ddim_timesteps():
    ab = cosine_alphas_cumprod(1000)
    assert ab.shape == (1000,) and ab[0] > 0.999 and ab[-1] < 1e-3
    assert torch.all(ab[1:] < ab[:-1])
    sched = PriorDDIMScheduler(ab)
    for n in (1, 7, 32, 1000):
        sched.set_timesteps(n)
        ts = sched.timesteps.tolist()
        assert len(ts) == n and ts[0] == 999 and len(set(ts)) == n and ts == sorted(ts)[::-1]
    with pytest.raises(InvalidArgument):
        sched.set_timesteps(0)


def test_ddim_round_trip_with_an_exact_x0_predictor():
    """If the model predicts the true x0, DDIM from x_T built from that x0 ends on x0."""
    ab = cosine_alphas_cumprod(1000)
    sched = PriorDDIMScheduler(ab)
    sched.set_timesteps(10)
    x0, noise = torch.randn(3, D), torch.randn(3, D)
    t0 = int(sched.timesteps[0])
    x = ab[t0].sqrt() * x0 + (1 - ab[t0]).sqrt() * noise
    for t in sched.timesteps.tolist():
        x = sched.step(x0, t, x)
    assert torch.allclose(x, x0, atol=1e-5)


def test_padded_text_tokens_are_ignored():
    prior = make_prior()
    text, temb = fake_text(2, seed=0), unit(2, D, 1)
    x, t = torch.randn(2, D), torch.tensor([10, 500])
    noisy = text.states.clone()
    noisy[~text.mask] = 1e3 * torch.randn_like(noisy[~text.mask])
    with torch.no_grad():
        a = prior(x, t, text.states, text.mask, temb)
        b = prior(x, t, noisy, text.mask, temb)
    assert torch.allclose(a, b, atol=1e-5)


def test_guidance_scale_semantics():
    prior = make_prior()
    text, temb = fake_text(2, seed=0), unit(2, D, 1)
    null = prior.drop_conditions(text.states, text.mask, temb, torch.ones(2, dtype=torch.bool))
    cond = prior.encode_condition(text.states, text.mask, temb)
    uncond = prior.encode_condition(*null)
    x, t = torch.randn(2, D), 400
    tt = torch.full((2,), t)
    with torch.no_grad():
        c, u = prior(x, tt, text.states, text.mask, temb), prior(x, tt, *null)
        assert torch.allclose(prior._guided_x0(x, t, cond, uncond, None, 1.0), c)
        assert torch.allclose(prior._guided_x0(x, t, cond, uncond, None, 0.0), u)
        guided = prior._guided_x0(x, t, cond, uncond, None, 3.0)
        assert torch.allclose(guided, u + 3 * (c - u), atol=1e-5)
    assert not torch.allclose(c, u)


def test_cached_condition_matches_one_full_causal_pass():
    """denoise() reuses the condition tokens' keys/values; check it against running the
    whole sequence [text tokens, text emb, timestep, x_t, query] through the blocks at once."""
    from tessera.prior.model import timestep_embedding

    prior = make_prior()
    text, temb = fake_text(3, seed=0), unit(3, D, 1)
    x, t = torch.randn(3, D), torch.tensor([0, 300, 999])
    m, d, n_text = prior.config.max_text_tokens, prior.config.n_embd, text.mask.shape[1]
    with torch.no_grad():
        seq = torch.cat(
            [
                prior.text_in(text.states) + prior.pos[:n_text],
                (prior.text_emb_in(temb) + prior.pos[m])[:, None],
                (prior.time_in(timestep_embedding(t, d)) + prior.pos[m + 1])[:, None],
                (prior.x_in(x) + prior.pos[m + 2])[:, None],
                (prior.query + prior.pos[m + 3]).expand(3, 1, d),
            ],
            dim=1,
        )
        n = seq.shape[1]
        key_ok = torch.cat([text.mask, torch.ones(3, 4, dtype=torch.bool)], dim=1)
        allowed = (torch.ones(n, n, dtype=torch.bool).tril()[None] & key_ok[:, None])[:, None]
        for block in prior.blocks:
            seq, _ = block(seq, allowed)
        reference = prior.head(prior.ln_f(seq[:, -1]))
        assert torch.allclose(prior(x, t, text.states, text.mask, temb), reference, atol=1e-5)


def test_trimming_padding_changes_nothing():
    prior = make_prior()
    text, temb = fake_text(2, seed=0, length=12), unit(2, D, 1)
    x, t = torch.randn(2, D), torch.tensor([10, 700])
    longer = torch.cat([text.states, torch.randn(2, 20, 384)], dim=1)  # 32 tokens, 20 padded
    mask = torch.cat([text.mask, torch.zeros(2, 20, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        a = prior(x, t, text.states, text.mask, temb)
        b = prior(x, t, longer, mask, temb)
    assert torch.allclose(a, b, atol=1e-5)


def test_scale_zero_ignores_the_text_and_scale_one_does_not():
    prior = make_prior()
    a, b = fake_text(1, seed=0), fake_text(1, seed=5)
    ea, eb = unit(1, D, 1), unit(1, D, 2)
    kw = {"seeds": [3], "steps": 6, "n_candidates": 1}
    assert torch.equal(
        prior.sample(a, ea, guidance_scale=0.0, **kw), prior.sample(b, eb, guidance_scale=0.0, **kw)
    )
    assert not torch.allclose(
        prior.sample(a, ea, guidance_scale=1.0, **kw), prior.sample(b, eb, guidance_scale=1.0, **kw)
    )


def test_seeds_are_deterministic_and_rows_independent_of_the_batch():
    prior = make_prior()
    text, temb = fake_text(3, seed=0), unit(3, D, 1)
    kw = {"guidance_scale": 2.0, "steps": 6}
    batch = prior.sample(text, temb, seeds=[5, 6, 7], **kw)
    assert batch.shape == (3, D)
    assert torch.allclose(batch.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(batch, prior.sample(text, temb, seeds=[5, 6, 7], **kw))
    alone = prior.sample(rows(text, [1]), temb[[1]], seeds=[6], **kw)
    assert torch.allclose(alone[0], batch[1], atol=1e-5)
    other = prior.sample(text, temb, seeds=[5, 99, 7], **kw)
    assert torch.allclose(other[[0, 2]], batch[[0, 2]], atol=1e-5)
    assert not torch.allclose(other[1], batch[1])


def test_candidate_selection_keeps_the_one_closer_to_the_text():
    text_emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    cands = F.normalize(torch.tensor([[[0.0, 1.0], [1.0, 0.2]], [[0.0, 1.0], [1.0, 0.0]]]), dim=-1)
    chosen = select_candidates(cands, text_emb)
    assert torch.equal(chosen[0], cands[0, 1]) and torch.equal(chosen[1], cands[1, 0])

    prior = make_prior()
    text, temb = fake_text(2, seed=0), unit(2, D, 1)
    kw = {"seeds": [1, 2], "guidance_scale": 1.0, "steps": 4, "n_candidates": 3}
    all_c = prior.sample_candidates(text, temb, **kw)
    best = prior.sample(text, temb, **kw)
    assert all_c.shape == (2, 3, D)
    scores = (all_c * temb[:, None]).sum(-1)
    for i in range(2):
        assert torch.equal(best[i], all_c[i, int(scores[i].argmax())])


def test_bad_arguments_raise_invalid_argument():
    prior = make_prior()
    text, temb = fake_text(2, seed=0), unit(2, D, 1)
    with pytest.raises(InvalidArgument):
        prior.sample(text, temb, seeds=[1])
    with pytest.raises(InvalidArgument):
        prior.sample(text, temb, seeds=[1, 2], steps=0)
    with pytest.raises(InvalidArgument):
        prior.sample(text, temb, seeds=[1, 2], guidance_scale=-1.0)
    with pytest.raises(InvalidArgument):
        prior.sample(text, unit(2, D + 1, 0), seeds=[1, 2])


def test_tiny_prior_overfits(overfit):
    prior, text, temb, target, losses = overfit
    assert sum(losses[-20:]) / 20 < 0.25 * sum(losses[:20]) / 20
    pred = prior.sample(text, temb, seeds=[0, 1, 2, 3], guidance_scale=1.0, steps=16)
    cos = pred @ target.t()  # (4,4): each caption lands on its own embedding
    assert torch.all(cos.diag() > 0.9)
    assert torch.equal(cos.argmax(dim=1), torch.arange(4))


def test_save_load_round_trip(tmp_path, overfit):
    prior, text, temb, _, _ = overfit
    save_component(tmp_path / "prior", prior, prior.config)
    loaded = load_component(tmp_path / "prior")
    assert isinstance(loaded, DiffusionPrior) and loaded.config == prior.config
    assert torch.equal(loaded.emb_mean, prior.emb_mean) and torch.equal(
        loaded.emb_std, prior.emb_std
    )
    kw = {"seeds": [4, 5, 6, 7], "guidance_scale": 2.0, "steps": 5}
    assert torch.equal(loaded.sample(text, temb, **kw), prior.sample(text, temb, **kw))
