"""Sampling image-token grids from an ImageGPT: temperature, top-k, top-p, classifier-free
guidance and a seed per row, with or without the KV cache.

Reproducibility: every row draws its randomness from its own ``torch.Generator`` seeded with
its own seed, one uniform number per token, all drawn up front (``draw_uniforms``), so a row's
tokens depend only on its prompt, its parameters and its seed, never on which other requests
share the batch. The cache-free path and the continuous-batching engine use the same numbers
as the cached one, so all three give the same tokens.

Guidance: when any row has a scale other than 1 the batch is doubled (conditional rows, then
the same rows with the learned null condition) and the logits are mixed as
``uncond + s * (cond - uncond)``; scale 1 takes the conditional logits as they are and scale 0
the unconditional ones, exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tessera.common.device import make_generator
from tessera.common.errors import Cancelled, InvalidArgument
from tessera.common.limits import (
    MAX_GUIDANCE,
    MIN_TEMPERATURE,
    MIN_TOP_P,
    MIN_WIRE_TEMPERATURE,
    MIN_WIRE_TOP_P,
)
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT, trim_text


@dataclass
class SamplingParams:
    temperature: float | None = None  # >= MIN_TEMPERATURE; None = the model's default
    top_k: int = 0  # keep the k most likely codes; 0 = off
    top_p: float = 1.0  # nucleus mass in [MIN_TOP_P, 1]; 1 = off
    guidance_scale: float | None = None  # [0, 20]; None = the model's default
    seed: int = 0


def validate_params(params: SamplingParams, vocab_size: int) -> None:
    """Raise InvalidArgument naming the first bad field.

    The floors are the float32 of MIN_TEMPERATURE / MIN_TOP_P, so the bound itself passes
    after a float32 wire field has carried it, and a value a float32 tensor turns into 0
    (or a temperature whose logits / t overflow) does not."""
    t = params.temperature
    if t is not None and (
        not isinstance(t, int | float) or not math.isfinite(t) or t < MIN_WIRE_TEMPERATURE
    ):
        raise InvalidArgument(f"temperature must be a number >= {MIN_TEMPERATURE:g}, got {t!r}")
    k = params.top_k
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > vocab_size:
        raise InvalidArgument(f"top_k must be an integer in [0, {vocab_size}], got {k!r}")
    p = params.top_p
    in_range = isinstance(p, int | float) and MIN_WIRE_TOP_P <= p <= 1
    if not in_range or not math.isfinite(p):
        raise InvalidArgument(f"top_p must be in [{MIN_TOP_P:g}, 1], got {p!r}")
    s = params.guidance_scale
    if s is not None and (
        not isinstance(s, int | float) or not math.isfinite(s) or not 0 <= s <= MAX_GUIDANCE
    ):
        raise InvalidArgument(f"guidance_scale must be in [0, {MAX_GUIDANCE:g}], got {s!r}")
    if isinstance(params.seed, bool) or not isinstance(params.seed, int):
        raise InvalidArgument(f"seed must be an integer, got {params.seed!r}")


def resolve_temperature(params: SamplingParams, config: object) -> float:
    """The request's temperature, else the model's default (configs older than the field: 1)."""
    if params.temperature is not None:
        return float(params.temperature)
    return float(getattr(config, "temperature", 1.0))


def draw_uniforms(seeds: list[int], n_tokens: int, device: torch.device) -> torch.Tensor:
    """Each row's ``n_tokens`` uniform draws from a generator seeded with its seed: (B, L).

    On CPU these are bit for bit the numbers one draw per token would give.
    """
    return torch.stack(
        [torch.rand(n_tokens, generator=make_generator(s, device), device=device) for s in seeds]
    )


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance on logits; (B, V), (B, V), (B,) -> (B, V).

    Scales 1 and 0 return ``cond`` / ``uncond`` bit for bit (the formula would round).
    """
    s = scale.view(-1, 1)
    mixed = uncond + s * (cond - uncond)
    return torch.where(s == 1, cond, torch.where(s == 0, uncond, mixed))


def filter_and_draw(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    uniform: torch.Tensor,
    mode: str | None = None,
) -> torch.Tensor:
    """Per-row temperature, top-k and top-p, then inverse-CDF sampling.

    logits (B, V) float; temperature, top_p, uniform (B,) float; top_k (B,) int64 (0 = off)
    -> (B,) int64 codes. A row with a filter works in sorted order (the kept codes are then a
    prefix of it); a row without one walks the codes in index order and skips the sort, a
    quarter of a decode step at batch 16. Which path a row takes depends on its own
    parameters only, so its tokens never depend on its batch. ``mode`` ("plain": no row
    filters, "filtered": every row does; :func:`draw_mode`) saves a caller that draws many
    tokens with the same rows the check (and its device sync) at every token.
    """
    logits = logits / temperature.view(-1, 1)
    mode = mode or draw_mode(top_k, top_p)
    if mode == "plain":
        return _draw_in_order(logits, uniform)
    if mode == "filtered":
        return _draw_filtered(logits, top_k, top_p, uniform)
    filtered = (top_k > 0) | (top_p < 1)
    out = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    rows, plain = filtered.nonzero().view(-1), (~filtered).nonzero().view(-1)
    out[rows] = _draw_filtered(logits[rows], top_k[rows], top_p[rows], uniform[rows])
    out[plain] = _draw_in_order(logits[plain], uniform[plain])
    return out


def draw_mode(top_k: torch.Tensor, top_p: torch.Tensor) -> str:
    """ "plain" (no row filters), "filtered" (every row) or "mixed"."""
    filtered = (top_k > 0) | (top_p < 1)
    if not filtered.any():
        return "plain"
    return "filtered" if filtered.all() else "mixed"


def _inverse_cdf(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """The first position whose cumulative mass exceeds ``uniform`` x the total."""
    cdf = probs.cumsum(-1)  # (B, V); unnormalised is fine: scale the draw instead
    total = cdf[:, -1:]
    # Rounding can put the draw at the very top of the CDF, past every code. The largest
    # float below the total still lands where the CDF rises, i.e. on a code with mass.
    below_top = torch.nextafter(total, torch.zeros_like(total))
    target = torch.minimum(uniform.view(-1, 1) * total, below_top).contiguous()
    return torch.searchsorted(cdf, target, right=True).view(-1)


def _draw_in_order(logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    return _inverse_cdf(torch.softmax(logits, dim=-1), uniform)


def _draw_filtered(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, uniform: torch.Tensor
) -> torch.Tensor:
    probs, order = _sorted_filtered_probs(logits, top_k, top_p)
    pick = _inverse_cdf(probs, uniform)
    return order.gather(1, pick.view(-1, 1)).view(-1)


def _sorted_filtered_probs(
    logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k and top-p on (B, V) logits -> the kept mass in descending order (unnormalised
    after the nucleus cut) and the codes in that order, both (B, V)."""
    V = logits.shape[-1]
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
    rank = torch.arange(V, device=logits.device).view(1, V)
    k = torch.where(top_k > 0, top_k, torch.full_like(top_k, V)).view(-1, 1)
    sorted_logits = sorted_logits.masked_fill(rank >= k, float("-inf"))
    probs = torch.softmax(sorted_logits, dim=-1)  # (B, V), descending
    # Nucleus: drop a code once the mass strictly before it already reaches top_p.
    before = probs.cumsum(-1) - probs
    nucleus = (top_p < 1).view(-1, 1)  # top_p = 1 is off (rounding would trim the far tail)
    probs = probs.masked_fill(nucleus & (before >= top_p.view(-1, 1)) & (rank > 0), 0.0)
    return probs, order


@torch.no_grad()
def sample_tokens(
    model: ImageGPT,
    text: TextBatch,
    params: list[SamplingParams],
    *,
    use_cache: bool = True,
    progress_every: int = 16,
    on_progress: Callable[[int, torch.Tensor], bool] | None = None,
    jacobi: int = 0,
    stats: dict | None = None,
) -> torch.Tensor:
    """Sample one token grid per row of ``text``.

    Returns (B, h, w) int64. ``on_progress(tokens_done, partial (B, h*w) with -1 where not yet
    sampled)`` is called every ``progress_every`` tokens and after the last one; returning
    False stops sampling with ``Cancelled``. ``jacobi`` > 0 samples with speculative Jacobi
    windows of that many drafts (``tessera.lm.jacobi``: the same distribution, other tokens
    than plain sampling at the same seed; needs the cache); ``stats`` receives its counts.
    """
    cfg = model.config
    B = text.states.shape[0]
    if len(params) != B:
        raise InvalidArgument(f"{len(params)} sampling parameter sets for {B} prompts")
    if B == 0:
        raise InvalidArgument("nothing to sample: no prompts")
    if isinstance(progress_every, bool) or not isinstance(progress_every, int):
        raise InvalidArgument(f"progress_every must be an integer >= 1, got {progress_every!r}")
    if progress_every < 1:
        raise InvalidArgument(f"progress_every must be >= 1, got {progress_every}")
    for p in params:
        validate_params(p, cfg.vocab_size)

    device = model.lm_head.weight.device
    f32 = dict(dtype=torch.float32, device=device)
    scale = torch.tensor(
        [cfg.guidance_scale if p.guidance_scale is None else p.guidance_scale for p in params],
        **f32,
    )
    temperature = torch.tensor([resolve_temperature(p, cfg) for p in params], **f32)
    top_k = torch.tensor([p.top_k for p in params], dtype=torch.long, device=device)
    top_p = torch.tensor([p.top_p for p in params], **f32)
    uniforms = draw_uniforms([p.seed for p in params], cfg.n_tokens, device)  # (B, L)
    mode = draw_mode(top_k, top_p)  # the same rows every token: decided once

    # Doubled batch for guidance: rows [0, B) conditional, rows [B, 2B) null condition.
    states, mask = trim_text(text.states.to(device), text.mask.to(device))
    guided = bool((scale != 1).any())
    drop = torch.zeros(B, dtype=torch.bool, device=device)
    if guided:
        states, mask = torch.cat([states, states]), torch.cat([mask, mask])
        drop = torch.cat([drop, torch.ones_like(drop)])

    L = cfg.n_tokens
    was_training = model.training
    model.eval()
    if jacobi > 0 and use_cache:
        from tessera.lm import jacobi as jd

        reached = [0]

        def report(done: int, out: torch.Tensor) -> None:
            if on_progress is None or (done // progress_every == reached[0] and done < L):
                return
            reached[0] = done // progress_every
            keep = on_progress(done, out.clone())
            if keep is not None and not keep:
                raise Cancelled(f"sampling cancelled after {done} of {L} tokens")

        draw = jd.DrawParams(scale, temperature, top_k, top_p, mode)
        try:
            out = jd.sample_window(
                model, states, mask, drop, draw, [p.seed for p in params], jacobi, report, stats
            )
        finally:
            model.train(was_training)
        return out.view(B, cfg.grid_size, cfg.grid_size)
    out = torch.full((B, L), -1, dtype=torch.long, device=device)
    try:
        # prefix + BOS + L - 1 inputs: the trimmed prefix leaves the block's tail unused
        cache = (
            model.new_cache(states.shape[0], positions=states.shape[1] + L) if use_cache else None
        )
        for i in range(L):
            if cache is not None and i == 0:
                logits = model.prefill(states, mask, cache, drop_cond=drop)
            elif cache is not None:
                last = out[:, i - 1]
                logits = model.decode_step(torch.cat([last, last]) if guided else last, cache)
            else:  # cache-free: the whole sequence again, keep the last position
                codes = torch.cat([out[:, :i], out[:, :i]]) if guided else out[:, :i]
                logits = model(codes, states, mask, drop_cond=drop)[0][:, -1]
            if guided:
                logits = guide(logits[:B], logits[B:], scale)
            out[:, i] = filter_and_draw(logits, temperature, top_k, top_p, uniforms[:, i], mode)
            done = i + 1
            if on_progress is not None and (done % progress_every == 0 or done == L):
                keep = on_progress(done, out.clone())
                if keep is not None and not keep:
                    raise Cancelled(f"sampling cancelled after {done} of {L} tokens")
    finally:
        model.train(was_training)
    return out.view(B, cfg.grid_size, cfg.grid_size)
