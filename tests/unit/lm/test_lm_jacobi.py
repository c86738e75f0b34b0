"""Speculative Jacobi decoding (tessera.lm.jacobi): DISTRIBUTION-PRESERVING, not exact.

Its tokens differ from plain sampling's at the same seed; what holds is that every token is
drawn from the same conditional distribution. The tests check the pieces (a window forward
gives the one-token-at-a-time logits; the acceptance rule returns the target distribution)
and the whole (per-cell token marginals of Jacobi and plain sampling agree on a tiny model
whose distributions are far from uniform, by a chi-square test with fixed seeds).
"""

from __future__ import annotations

import pytest
import torch
from lm_helpers import fake_text
from scipy.stats import chi2_contingency

from tessera.common.errors import Cancelled
from tessera.lm import jacobi
from tessera.lm.model import ImageGPT, LMConfig
from tessera.lm.sampling import SamplingParams, sample_tokens


def peaked_model(seed: int = 0) -> ImageGPT:
    """A tiny random model with sharp, context-dependent distributions (an untrained one is
    near uniform, where any sampler looks right)."""
    torch.manual_seed(seed)
    model = ImageGPT(LMConfig.tiny(vocab_size=8, grid_size=3, guidance_scale=1.0)).eval()
    with torch.no_grad():
        model.tok_emb.weight.mul_(40)
        model.lm_head.weight.mul_(60)
    return model


def test_a_window_forward_gives_the_one_token_logits():
    model = peaked_model()
    text = fake_text(3, seed=2)
    L, W = model.config.n_tokens, 3
    seq = torch.randint(0, 8, (3, L))
    window = model.new_cache(3, extra=W)
    single = model.new_cache(3, extra=W)
    with torch.no_grad():
        model.prefill(text.states, text.mask, window)
        model.prefill(text.states, text.mask, single)
        offset = torch.full((3,), window.prefix_len)
        cell = torch.tensor([1, 2, 4])  # rows at different places
        for c in range(1, 4):  # bring each row to its cell, one token at a time, in both
            lag = cell > c
            for cache in (window, single):
                step = torch.where(lag, torch.full_like(cell, c), cell)
                model.decode_rows(seq[torch.arange(3), step - 1], step, offset, cache)
        inputs = seq[torch.arange(3).view(-1, 1), cell.view(-1, 1) - 1 + torch.arange(W + 1)]
        got = model.decode_rows(inputs, cell, offset, window)  # (3, W+1, V)
        want = [model.decode_rows(inputs[:, i], cell + i, offset, single) for i in range(W + 1)]
    assert got.shape == (3, W + 1, 8)
    torch.testing.assert_close(got, torch.stack(want, 1), rtol=1e-4, atol=1e-4)


def test_the_acceptance_rule_returns_the_target_distribution():
    # p for two cells; drafts from a proposal q far from p. Plain acceptance of drafts would
    # give q; the rule must give p for the first token, and p[1] for the second where the
    # first draft was accepted (p[1] is the target given that draft).
    S, W = 200_000, 2
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.1, 0.2, 0.6], [0.25, 0.25, 0.25, 0.25]])
    q = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]])
    gen = torch.Generator().manual_seed(0)
    drafts = torch.stack([torch.multinomial(q[i], S, True, generator=gen) for i in range(W)], 1)
    uniforms = torch.rand(S, 2 * W + 1, generator=gen)
    tokens, n, next_drafts, next_q = jacobi.verify(
        p.expand(S, -1, -1), drafts, q.expand(S, -1, -1).contiguous(), uniforms
    )
    first = torch.bincount(tokens[:, 0], minlength=4) / S
    accepted = tokens[n >= 2, 1]
    second = torch.bincount(accepted, minlength=4) / len(accepted)
    tol = 4 * (0.25 / len(accepted)) ** 0.5  # 4 sigma of the smaller sample
    assert (first - p[0]).abs().max() < tol
    assert (second - p[1]).abs().max() < tol
    assert (torch.bincount(drafts[:, 0], minlength=4) / S - p[0]).abs().max() > 10 * tol
    assert ((n >= 1) & (n <= W + 1)).all()
    assert next_drafts.shape == (S, W) and next_q.shape == (S, W, 4)


def marginals_agree(a: torch.Tensor, b: torch.Tensor, vocab: int) -> list[float]:
    """Chi-square p-value per cell of two (N, L) token samples having the same marginal."""
    pvalues = []
    for cell in range(a.shape[1]):
        table = torch.stack(
            [
                torch.bincount(a[:, cell], minlength=vocab),
                torch.bincount(b[:, cell], minlength=vocab),
            ]
        )
        table = table[:, table.sum(0) > 0]
        pvalues.append(1.0 if table.shape[1] < 2 else float(chi2_contingency(table)[1]))
    return pvalues


@pytest.mark.parametrize(
    "params",
    [
        dict(guidance_scale=1.0, temperature=1.0),
        dict(guidance_scale=3.0, temperature=0.8, top_k=5, top_p=0.9),
    ],
)
def test_jacobi_and_plain_sampling_have_the_same_token_marginals(params):
    model = peaked_model()
    N, L = 2000, model.config.n_tokens
    one = fake_text(1, seed=5)
    text = type(one)(one.states.expand(N, -1, -1), one.mask.expand(N, -1), one.pooled.expand(N, -1))
    plain = sample_tokens(model, text, [SamplingParams(seed=s, **params) for s in range(N)])
    stats: dict = {}
    fast = sample_tokens(
        model,
        text,
        [SamplingParams(seed=N + s, **params) for s in range(N)],
        jacobi=3,
        stats=stats,
    )
    same_seeds = sample_tokens(
        model, text, [SamplingParams(seed=s, **params) for s in range(N)], jacobi=3
    )
    assert not torch.equal(plain, same_seeds)  # not token-identical to plain sampling
    plain, fast = plain.view(N, L), fast.view(N, L)
    assert (fast >= 0).all()
    # Bonferroni over the cells: a real difference gives p-values near 0.
    assert min(marginals_agree(plain, fast, model.config.vocab_size)) > 0.001 / L
    # Some drafts get through (a round takes at least one token: L-1 rounds at most).
    assert stats["tokens_per_forward"] > 1.02
    assert stats["forwards"] <= L - 1


def test_jacobi_is_reproducible_per_seed_and_reports_progress():
    model = peaked_model(1)
    text = fake_text(3, seed=3)
    params = [SamplingParams(seed=s, guidance_scale=2.0) for s in (7, 8, 9)]
    seen: list[int] = []
    a = sample_tokens(model, text, params, jacobi=2, progress_every=4,
                      on_progress=lambda done, out: seen.append(done))  # fmt: skip
    b = sample_tokens(model, text, params, jacobi=2)
    assert torch.equal(a, b)
    assert seen[-1] == model.config.n_tokens and seen == sorted(seen)
    with pytest.raises(Cancelled):
        sample_tokens(model, text, params, jacobi=2, progress_every=1,
                      on_progress=lambda done, out: False)  # fmt: skip
