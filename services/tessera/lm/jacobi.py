"""Speculative Jacobi decoding (Teng et al. 2024, "Accelerating Auto-regressive Text-to-Image
Generation with Training-free Speculative Jacobi Decoding"): several image tokens per forward.

Each sequence keeps a window of ``W`` draft tokens after the ones it has accepted, each drawn
from a known proposal distribution ``q`` (the model's own distribution for that cell from
the previous forward, computed on drafts that may since have changed). One forward runs the
last accepted token and the W drafts at once (teacher forcing, KV cache) and gives the model's
distribution ``p`` for the W+1 cells after the accepted prefix, each conditioned on the drafts
before it. Drafts are then verified left to right with the speculative-sampling rule: draft
``x`` is accepted with probability ``min(1, p(x) / q(x))``; the first rejected one is replaced
by a draw from ``max(p - q, 0)`` (normalised) and ends the round; if all W are accepted a
bonus token is drawn from the last ``p``. Every accepted token is therefore distributed exactly
as plain ancestral sampling would draw it (the rule's classic guarantee), so Jacobi sampling is
*distribution-preserving*, not token-identical to plain sampling at the same seed. The cells
after the round's last token get fresh drafts from this forward's (stale) distributions; cells
past the forward's reach take its last distribution as their proposal.

Randomness: every sequence draws a table of uniforms from its own seeded generator up front
(``draw_jacobi_uniforms``: row 0 for the prefill's token and the first drafts, row r for its
r-th round); rounds use only that sequence's row, so its tokens do not depend on its batch.
Each round accepts at least one token, so L rounds always suffice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from tessera.common.device import make_generator
from tessera.lm.model import ImageGPT
from tessera.lm.sampling import _inverse_cdf, _sorted_filtered_probs, guide


@dataclass
class DrawParams:
    """Per-sequence sampling parameters as tensors, (S,) each, and their ``draw_mode``."""

    scale: torch.Tensor
    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    mode: str

    def repeat(self, n: int) -> DrawParams:
        """Each sequence's values n times over (one per cell of a window): (S * n,)."""
        rep = {f: getattr(self, f).repeat_interleave(n) for f in ("scale", "temperature")}
        rep |= {f: getattr(self, f).repeat_interleave(n) for f in ("top_k", "top_p")}
        return replace(self, **rep)


def draw_jacobi_uniforms(
    seeds: list[int], n_tokens: int, window: int, device: torch.device
) -> torch.Tensor:
    """(S, n_tokens + 1, 2 * window + 1): per sequence and round, W acceptance draws, one for
    the round's last token, W for the new drafts."""
    shape = (n_tokens + 1, 2 * window + 1)
    return torch.stack(
        [torch.rand(shape, generator=make_generator(s, device), device=device) for s in seeds]
    )


def target_probs(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """The distribution ``filter_and_draw`` samples from, in code order: (N, V) -> (N, V)
    (unnormalised where a filter cut codes: callers only take ratios and inverse CDFs)."""
    logits = logits / temperature.view(-1, 1)
    plain = torch.softmax(logits, dim=-1) if mode != "filtered" else None
    if mode == "plain":
        return plain
    sorted_probs, order = _sorted_filtered_probs(logits, top_k, top_p)
    sorted_probs = sorted_probs / sorted_probs.sum(-1, keepdim=True)
    filtered = torch.zeros_like(sorted_probs).scatter_(1, order, sorted_probs)
    if mode == "filtered":
        return filtered
    rows = ((top_k > 0) | (top_p < 1)).view(-1, 1)
    return torch.where(rows, filtered, plain)


def first_round(
    p0: torch.Tensor, uniforms: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """After the prefill: the first token from ``p0`` (S, V) and W drafts with ``p0`` as
    their proposal. uniforms (S, 2W+1) -> token (S,), drafts (S, W), proposals (S, W, V)."""
    S, V = p0.shape
    token = _inverse_cdf(p0, uniforms[:, window].contiguous())
    q = p0.unsqueeze(1).expand(S, window, V).contiguous()
    drafts = _inverse_cdf(q.view(-1, V), uniforms[:, window + 1 :].reshape(-1)).view(S, window)
    return token, drafts, q


def verify(
    p: torch.Tensor, drafts: torch.Tensor, q: torch.Tensor, uniforms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One round's acceptance for S sequences.

    p (S, W+1, V) the model's distributions for the cells after the accepted prefix, drafts
    (S, W) with their proposals q (S, W, V), uniforms (S, 2W+1) -> new tokens (S, W+1) (the
    first ``n`` of each row count), n (S,) in 1..W+1, the next drafts (S, W) and their
    proposals (S, W, V).
    """
    S, W1, V = p.shape
    W = W1 - 1
    rows = torch.arange(S, device=p.device)
    p_draft = p[:, :W].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)  # (S, W)
    q_draft = q.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
    accept = uniforms[:, :W] * q_draft < p_draft  # u < p/q; q > 0 where a draft was drawn
    a = accept.long().cumprod(-1).sum(-1)  # (S,) leading accepted drafts
    p_a = p[rows, a]  # (S, V): the distribution at the first rejected draft (or the bonus)
    residual = (p_a - q[rows, a.clamp(max=W - 1)]).clamp_min(0)
    use_residual = (a < W) & (residual.sum(-1) > 0)  # p == q cannot reject: rounding guard
    last = _inverse_cdf(torch.where(use_residual.view(-1, 1), residual, p_a), uniforms[:, W])
    tokens = torch.cat([drafts, last.view(-1, 1)], dim=1)
    tokens[rows, a] = last
    # Next drafts: cell a+1+k's proposal is this forward's p there (past the window: its last).
    src = (a.view(-1, 1) + 1 + torch.arange(W, device=p.device)).clamp(max=W)  # (S, W)
    q_next = p.gather(1, src.unsqueeze(-1).expand(S, W, V))
    u_next = uniforms[:, W + 1 :].reshape(-1)
    drafts_next = _inverse_cdf(q_next.reshape(-1, V), u_next).view(S, W)
    return tokens, a + 1, drafts_next, q_next


def write_tokens(
    out: torch.Tensor, counts: torch.Tensor, tokens: torch.Tensor, n: torch.Tensor
) -> torch.Tensor:
    """Append each row's first ``n`` of ``tokens`` (S, W+1) to ``out`` (S, L) at ``counts``,
    clipped at L; returns how many each row took."""
    L = out.shape[1]
    n = torch.minimum(n, L - counts)
    k = torch.arange(tokens.shape[1], device=out.device).view(1, -1)
    keep = k < n.view(-1, 1)
    rows = torch.arange(out.shape[0], device=out.device).view(-1, 1).expand_as(tokens)
    out[rows[keep], (counts.view(-1, 1) + k)[keep]] = tokens[keep]
    return n


def sample_window(
    model: ImageGPT,
    states: torch.Tensor,
    mask: torch.Tensor,
    drop: torch.Tensor,
    draw: DrawParams,
    seeds: list[int],
    window: int,
    report: Callable[[int, torch.Tensor], None] | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """``sample_tokens``' loop with Jacobi windows of ``window`` drafts: rows of ``states``
    are the S sequences, then (guided) the same S with the null condition -> (S, L) codes.

    ``report(done, out)`` after every round (``done``: the tokens every row has). ``stats``
    gets ``forwards`` (model calls after the prefill) and ``tokens_per_forward`` (tokens a
    sequence accepted per round it took part in: the paper's acceptance measure)."""
    cfg, W = model.config, window
    S, L, V = len(seeds), cfg.n_tokens, cfg.vocab_size
    device = states.device
    guided = states.shape[0] == 2 * S
    uniforms = draw_jacobi_uniforms(seeds, L, W, device)  # (S, L+1, 2W+1)
    cache = model.new_cache(states.shape[0], extra=W)
    logits = model.prefill(states, mask, cache, drop_cond=drop)  # (R, V)
    if guided:
        logits = guide(logits[:S], logits[S:], draw.scale)
    p0 = target_probs(logits, draw.temperature, draw.top_k, draw.top_p, draw.mode)
    out = torch.full((S, L), -1, dtype=torch.long, device=device)
    out[:, 0], drafts, q = first_round(p0, uniforms[:, 0], W)
    counts = torch.ones(S, dtype=torch.long, device=device)
    rounds = torch.ones(S, dtype=torch.long, device=device)
    rows = torch.arange(S, device=device)
    offset = torch.full((states.shape[0],), cache.prefix_len, dtype=torch.long, device=device)
    per_cell = draw.repeat(W + 1)
    forwards = accepted = took_part = 0
    while (done := int(counts.min())) < L:
        if report is not None:
            report(done, out)
        cell = counts.clamp(max=L - 1)  # finished rows idle at the last slot
        inputs = torch.cat([out[rows, cell - 1].view(-1, 1), drafts], dim=1)  # (S, W+1)
        if guided:
            inputs, cell = torch.cat([inputs, inputs]), torch.cat([cell, cell])
        logits = model.decode_rows(inputs, cell, offset, cache).view(-1, W + 1, V)
        logits = logits.reshape(-1, V)
        if guided:
            logits = guide(logits[: S * (W + 1)], logits[S * (W + 1) :], per_cell.scale)
        p = target_probs(logits, per_cell.temperature, per_cell.top_k, per_cell.top_p, draw.mode)
        active = counts < L
        tokens, n, drafts, q = verify(p.view(S, W + 1, V), drafts, q, uniforms[rows, rounds])
        n = write_tokens(out, counts, tokens, n)
        counts += n
        rounds = (rounds + 1).clamp(max=L)
        forwards += 1
        accepted += int(n.sum())
        took_part += int(active.sum())
    if report is not None:
        report(L, out)
    if stats is not None:
        stats.update(forwards=forwards, tokens_per_forward=accepted / max(took_part, 1), window=W)
    return out
