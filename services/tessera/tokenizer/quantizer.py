"""Vector quantizers that keep their codebook in use.

Plain VQ (nearest code in a high-dimensional space, codebook learned by gradient) collapses to
a few dozen codes. Three remedies, one class each, same interface:

- ``L2Quantizer`` (default, after LlamaGen / ViT-VQGAN): look up in a *low-dimensional*,
  *l2-normalised* space (cosine similarity), codebook by gradient, plus dead-code restarts.
- ``EMAQuantizer`` (VQ-VAE-2 / SoundStream): codebook as exponential moving averages of the
  vectors assigned to each code, with dead-code restarts.
- ``FSQuantizer`` (Mentzer et al. 2023): round each of a few bounded channels to a fixed grid
  of levels; the codebook is implicit and has nothing to collapse.

Each maps ``z`` (B, C, h, w) to ``QuantizerOutput`` with a straight-through ``z_q`` (forward:
the code vectors, backward: the identity), the codebook + commitment loss and the indices.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor  # (B, C, h, w) quantized latents, straight-through to z
    loss: torch.Tensor  # () codebook + beta * commitment (0 where the codebook is not learned)
    indices: torch.Tensor | None  # (B, h, w) int64; None for a continuous bottleneck


def _flatten(z: torch.Tensor) -> torch.Tensor:
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (B*h*w, C)


def _unflatten(flat: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    b, c, h, w = like.shape
    return flat.view(b, h, w, c).permute(0, 3, 1, 2)


class _RestartMixin:
    """Data-dependent initialisation and dead-code restarts.

    The first training batch seeds every code with a random encoder output (so no code
    starts out of reach); afterwards a code whose (EMA) usage falls below ``threshold``
    assignments per batch is moved onto a random encoder output of the current batch."""

    usage: torch.Tensor
    initialized: torch.Tensor

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        if bool(self.initialized):
            return
        all_codes = torch.ones_like(self.usage, dtype=torch.bool)
        picks = flat[torch.randint(0, flat.shape[0], (all_codes.numel(),), device=flat.device)]
        self._assign(all_codes, picks + 1e-3 * torch.randn_like(picks))  # break ties
        self.initialized.fill_(True)

    def _track(self, indices: torch.Tensor, decay: float) -> None:
        counts = torch.bincount(indices, minlength=self.usage.numel()).to(self.usage.dtype)
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)

    @torch.no_grad()
    def _restart(self, flat: torch.Tensor, threshold: float) -> torch.Tensor:
        dead = self.usage < threshold
        n = int(dead.sum())
        if n == 0:
            return dead
        picks = flat[torch.randint(0, flat.shape[0], (n,), device=flat.device)]
        self.usage[dead] = 1.0  # the initial value: a grace period before it is judged again
        self._assign(dead, picks)
        return dead

    def _assign(self, dead: torch.Tensor, vectors: torch.Tensor) -> None:
        raise NotImplementedError


class L2Quantizer(_RestartMixin, nn.Module):
    def __init__(
        self, size: int, dim: int, beta: float = 0.25, restart_threshold: float = 0.03,
        usage_decay: float = 0.99,
    ) -> None:  # fmt: skip
        super().__init__()
        self.size, self.dim, self.beta = size, dim, beta
        self.restart_threshold, self.usage_decay = restart_threshold, usage_decay
        self.embedding = nn.Parameter(torch.randn(size, dim))
        self.register_buffer("usage", torch.ones(size))
        self.register_buffer("initialized", torch.tensor(False))

    def codebook(self) -> torch.Tensor:
        return F.normalize(self.embedding, dim=-1)  # (K, C)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        # unit vectors: argmin distance == argmax cosine
        return (F.normalize(flat, dim=-1) @ self.codebook().t()).argmax(dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat = F.normalize(_flatten(z), dim=-1)  # (N, C)
        if self.training:
            self._init_from(flat.detach())
        indices = self.nearest(flat)
        q = self.lookup(indices)
        loss = F.mse_loss(q, flat.detach()) + self.beta * F.mse_loss(flat, q.detach())
        if self.training:
            self._track(indices, self.usage_decay)
            self._restart(flat.detach(), self.restart_threshold)
        z_n = _unflatten(flat, z)
        z_q = z_n + (_unflatten(q, z) - z_n).detach()  # straight-through estimator
        return QuantizerOutput(z_q, loss, indices.view(z.shape[0], *z.shape[2:]))

    def _assign(self, dead: torch.Tensor, vectors: torch.Tensor) -> None:
        self.embedding.data[dead] = vectors


class EMAQuantizer(_RestartMixin, nn.Module):
    def __init__(
        self, size: int, dim: int, beta: float = 0.25, decay: float = 0.99,
        restart_threshold: float = 0.03, eps: float = 1e-5,
    ) -> None:  # fmt: skip
        super().__init__()
        self.size, self.dim, self.beta, self.decay, self.eps = size, dim, beta, decay, eps
        self.restart_threshold = restart_threshold
        embed = torch.randn(size, dim)
        self.register_buffer("embed", embed)
        self.register_buffer("embed_sum", embed.clone())
        self.register_buffer("usage", torch.ones(size))  # EMA cluster sizes
        self.register_buffer("initialized", torch.tensor(False))

    def codebook(self) -> torch.Tensor:
        return self.embed

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.embed.t() + self.embed.pow(2).sum(1)
        return d.argmin(dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.embed)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        flat = _flatten(z)
        if self.training:
            self._init_from(flat.detach())
        indices = self.nearest(flat.detach())
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(indices, self.size).to(flat.dtype)  # (N, K)
                self.usage.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                self.embed_sum.mul_(self.decay).add_(onehot.t() @ flat, alpha=1 - self.decay)
                n = self.usage.sum()
                smoothed = (self.usage + self.eps) / (n + self.size * self.eps) * n  # Laplace
                self.embed.copy_(self.embed_sum / smoothed.unsqueeze(1))
                self._restart(flat.detach(), self.restart_threshold)
        q = self.lookup(indices)
        loss = self.beta * F.mse_loss(flat, q.detach())  # codebook is not learned by gradient
        z_q = z + (_unflatten(q, z) - z).detach()
        return QuantizerOutput(z_q, loss, indices.view(z.shape[0], *z.shape[2:]))

    def _assign(self, dead: torch.Tensor, vectors: torch.Tensor) -> None:
        self.embed[dead] = vectors
        self.embed_sum[dead] = vectors * self.usage[dead].unsqueeze(1)


class FSQuantizer(nn.Module):
    """Finite scalar quantization: channel i takes ``levels[i]`` values in [-1, 1]."""

    def __init__(self, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.levels = tuple(int(x) for x in levels)
        self.dim = len(self.levels)
        self.size = 1
        for n in self.levels:
            self.size *= n
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.float32))
        basis = torch.cumprod(torch.tensor((1, *self.levels[:-1])), dim=0)
        self.register_buffer("_basis", basis.to(torch.int64))

    def _bound(self, flat: torch.Tensor) -> torch.Tensor:
        # tanh into (-1, 1), then to grid units [0, L-1] (works for even L too)
        half = (self._levels - 1) / 2
        return (torch.tanh(flat) + 1) * half

    def _codes_to_indices(self, grid: torch.Tensor) -> torch.Tensor:
        return (grid.round().long() * self._basis).sum(-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        grid = (indices.unsqueeze(-1) // self._basis) % self._levels.long()
        return grid.float() / ((self._levels - 1) / 2) - 1  # (..., C) in [-1, 1]

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Nearest grid point of an *already bounded* vector in [-1, 1] (decode_latents)."""
        half = (self._levels - 1) / 2
        grid = ((flat.clamp(-1, 1) + 1) * half).round()
        return self._codes_to_indices(grid)

    def codebook(self) -> torch.Tensor:
        return self.lookup(torch.arange(self.size, device=self._levels.device))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        grid = self._bound(_flatten(z))
        rounded = grid + (grid.round() - grid).detach()  # straight-through rounding
        q = rounded / ((self._levels - 1) / 2) - 1
        indices = self._codes_to_indices(grid.detach())
        z_q = _unflatten(q, z)
        return QuantizerOutput(z_q, z.new_zeros(()), indices.view(z.shape[0], *z.shape[2:]))


def build_quantizer(
    kind: str, size: int, dim: int, *, beta: float, levels: tuple[int, ...],
    restart_threshold: float, usage_decay: float,
) -> nn.Module:  # fmt: skip
    if kind == "l2":
        return L2Quantizer(size, dim, beta, restart_threshold, usage_decay)
    if kind == "ema":
        return EMAQuantizer(size, dim, beta, decay=usage_decay, restart_threshold=restart_threshold)
    if kind == "fsq":
        return FSQuantizer(levels)
    raise ValueError(f"unknown quantizer {kind!r}; expected 'l2', 'ema' or 'fsq'")
