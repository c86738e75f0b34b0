"""Sampling checks and candidate selection of the diffusion prior (the sampler itself is
``DiffusionPrior.sample_candidates``; the step-batched engine reuses both functions)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_GUIDANCE
from tessera.common.text_encoder import TextBatch

if TYPE_CHECKING:
    from tessera.prior.model import PriorConfig


def check_sample_args(
    config: PriorConfig,
    text: TextBatch,
    text_emb: torch.Tensor,
    seeds: list[int],
    guidance_scale: float | None,
    steps: int | None,
    n_candidates: int | None,
) -> tuple[float, int, int]:
    """Validate a sampling request of the prior whose config is ``config``; the (guidance
    scale, steps, candidates) it runs with, config defaults filled in."""
    cfg = config
    b = text_emb.shape[0]
    scale = cfg.guidance_scale if guidance_scale is None else float(guidance_scale)
    steps = cfg.sample_steps if steps is None else int(steps)
    k = cfg.n_candidates if n_candidates is None else int(n_candidates)
    if len(seeds) != b:
        raise InvalidArgument(f"need one seed per row: {b} rows, {len(seeds)} seeds")
    if not math.isfinite(scale) or not 0 <= scale <= MAX_GUIDANCE:
        raise InvalidArgument(f"guidance_scale must be in [0, {MAX_GUIDANCE:g}]; got {scale}")
    if k < 1:
        raise InvalidArgument(f"n_candidates must be >= 1; got {k}")
    if text.states.shape[0] != b or text_emb.shape[1] != cfg.embed_dim:
        raise InvalidArgument(f"text and text_emb must both have {b} rows, D={cfg.embed_dim}")
    if text.states.shape[1] > cfg.max_text_tokens:
        raise InvalidArgument(
            f"at most {cfg.max_text_tokens} text tokens; got {text.states.shape[1]}"
        )
    return scale, steps, k


def select_candidates(candidates: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """(B,K,D) normalised candidates, (B,D) text embeddings -> (B,D): per row the candidate
    with the highest cosine to the text embedding (DALL·E 2 samples two and keeps one)."""
    score = (candidates * text_emb[:, None]).sum(-1)  # (B,K)
    best = score.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]
