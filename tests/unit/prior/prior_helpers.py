"""Helpers for the prior tests: synthetic MiniLM outputs and embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tessera.common.text_encoder import TextBatch


def fake_text(n: int, seed: int, length: int = 12) -> TextBatch:
    """Random MiniLM-shaped states with a varying number of real tokens per row."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, length, 384, generator=gen)
    lengths = torch.randint(2, length, (n,), generator=gen)
    mask = torch.arange(length).view(1, -1) < lengths.view(-1, 1)
    pooled = F.normalize(states.mean(1), dim=-1)
    return TextBatch(states=states, mask=mask, pooled=pooled)


def unit(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, dim, generator=gen), dim=-1)


def rows(text: TextBatch, idx: list[int]) -> TextBatch:
    return TextBatch(text.states[idx], text.mask[idx], text.pooled[idx])
