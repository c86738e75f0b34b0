"""Helpers for the LM tests: synthetic text batches and a tiny training loop."""

from __future__ import annotations

import torch

from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT


def fake_text(n: int, seed: int, length: int = 32) -> TextBatch:
    """Random MiniLM-shaped states with a varying number of real tokens per row."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, length, 384, generator=gen)
    lengths = torch.randint(3, 12, (n,), generator=gen)
    mask = torch.arange(length).view(1, -1) < lengths.view(-1, 1)
    pooled = torch.nn.functional.normalize(states.mean(1), dim=-1)
    return TextBatch(states=states, mask=mask, pooled=pooled)


def train_tiny(
    model: ImageGPT, text: TextBatch, codes: torch.Tensor, steps: int, lr: float = 3e-3
) -> list[float]:
    """Overfit ``model`` on a handful of (text, grid) pairs; returns the loss per step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    flat = codes.view(codes.shape[0], -1)
    model.train()
    losses = []
    for _ in range(steps):
        _, loss = model(flat[:, :-1], text.states, text.mask, targets=flat)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
