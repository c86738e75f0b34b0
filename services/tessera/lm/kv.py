"""The LM's decode-time pieces: the preallocated KV cache and one-query attention."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from tessera.lm.model import LMConfig


class KVCache:
    """Preallocated keys and values for every layer, plus the key padding mask."""

    def __init__(
        self,
        config: LMConfig,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        extra: int = 0,
        positions: int | None = None,
    ) -> None:
        """``positions`` (default: the block size) plus ``extra`` slots: room for a Jacobi
        window's look-ahead."""
        hd = config.n_embd // config.n_head
        size = (config.block_size if positions is None else positions) + extra
        shape = (batch, config.n_head, size, hd)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.key_mask = torch.ones(batch, size, dtype=torch.bool, device=device)
        self.length = 0  # positions filled so far
        self.prefix_len = 0  # text slots in front of BOS (set by prefill)
        self.bias: torch.Tensor | None = None  # key_mask as 0/-inf, built by decode_step

    def rows(self, n: int) -> KVCache:
        """A view of the first ``n`` rows (writes go to this cache): continuous batching keeps
        its running rows packed at the front."""
        view = object.__new__(KVCache)
        view.k, view.v = [k[:n] for k in self.k], [v[:n] for v in self.v]
        view.key_mask, view.length, view.prefix_len = self.key_mask[:n], self.length, 0
        view.bias = None
        return view


def attend_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Attention for a single query per row: (B, nh, 1, hd), keys/values (B, nh, Tk, hd),
    additive mask (B, 1, 1, Tk) -> (B, nh, 1, hd).

    Two batched matmuls and a softmax. On CPU this is 1.2-2.5x faster than
    ``scaled_dot_product_attention`` for one query (its flash kernel is built for long query
    blocks), and the attention was half of a 128-row decode step.
    """
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias  # (B, nh, 1, Tk)
    return torch.softmax(scores, dim=-1) @ v


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool "may attend" mask -> 0 / -inf of ``dtype``, built once per step for all layers."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill(
        ~visible, float("-inf")
    )
