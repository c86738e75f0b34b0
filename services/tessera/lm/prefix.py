"""The text conditioning the token decoders share (``ImageGPT``, the pixel route's
``ImageTransformer``): the frozen MiniLM per-token states projected to ``n_embd`` as a prefix,
a learned null condition for classifier-free guidance, and GPT-2's weight init.

``TextConditioned`` is a base class, not a submodule, so that its parameters keep the names
the committed weights were saved under (``text_norm.*``, ``text_proj.*``, ``text_pos``,
``null_cond``).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn


class PrefixConfig(Protocol):
    n_embd: int
    n_layer: int
    text_dim: int  # MiniLM hidden size
    text_len: int  # MiniLM tokens per caption (padded)


class TextConditioned(nn.Module):
    """Call ``add_text_prefix`` first in ``__init__`` and ``init_weights`` last (the order
    the random init draws in is part of what a seeded run produces)."""

    config: PrefixConfig

    def add_text_prefix(self, config: PrefixConfig) -> None:
        """Normalise the MiniLM states (their scale varies per token), project, add a
        position per prefix slot. The null condition is a learned prefix of its own."""
        C = config.n_embd
        self.text_norm = nn.LayerNorm(config.text_dim)
        self.text_proj = nn.Linear(config.text_dim, C)
        self.text_pos = nn.Parameter(torch.zeros(config.text_len, C))
        self.null_cond = nn.Parameter(torch.zeros(C))  # sits in slot 0, the rest is masked

    def init_weights(self) -> None:
        """N(0, 0.02) linears and embeddings, zero biases, GPT-2's scaled init of the
        residual projections, N(0, 0.02) prefix positions and null condition."""
        gpt2_init(self, self.config.n_layer)
        nn.init.normal_(self.text_pos, std=0.02)
        nn.init.normal_(self.null_cond, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def embed_prefix(
        self, states: torch.Tensor, mask: torch.Tensor, drop_cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, text_dim), (B, T) bool, (B,) bool -> (B, T, C), (B, T) mask; T <= text_len.

        Rows with ``drop_cond`` True get the learned null condition: slot 0 only, so the null
        rows' outputs do not depend on how far the batch's text is padded.
        """
        T = states.shape[1]
        if not 1 <= T <= self.config.text_len or mask.shape != states.shape[:2]:
            raise ValueError(
                f"text states must be (B, 1..{self.config.text_len}, {self.config.text_dim}) "
                f"with a matching mask, got {tuple(states.shape)} and {tuple(mask.shape)}"
            )
        states = states.to(self.text_proj.weight.dtype)
        x = self.text_proj(self.text_norm(states)) + self.text_pos[:T]  # (B, T, C)
        mask = mask.bool()
        if drop_cond is not None:
            drop = drop_cond.view(-1, 1).bool()  # (B, 1)
            null = torch.zeros_like(x)
            null[:, 0] = self.null_cond.to(x.dtype) + self.text_pos[0]
            x = torch.where(drop.unsqueeze(-1), null, x)
            slot0 = torch.arange(T, device=mask.device).view(1, T) == 0
            mask = torch.where(drop, slot0, mask)
        return x, mask


def gpt2_init(model: nn.Module, n_layer: int) -> None:
    """GPT-2's init: N(0, 0.02) linears and embeddings, zero biases, and the residual
    projections (``c_proj``) scaled down by sqrt(2 * n_layer)."""
    model.apply(_init_weights)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
