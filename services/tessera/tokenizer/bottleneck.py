"""The two bottlenecks beside vector quantization: DALL·E's dVAE and the KL autoencoder.

Same interface as the quantizers (``forward(z) -> QuantizerOutput``, ``lookup``, ``nearest``)
so ``VQModel`` stays one trunk whatever its ``kind``:

- ``GumbelQuantizer`` (``kind="gumbel"``, Ramesh et al. 2021): the encoder emits logits over
  the K codes at each position; training decodes the *relaxed* one-hot
  ``softmax((logits + Gumbel noise) / tau)`` times a learned (K, C) embedding, with a KL term
  from the code distribution toward the uniform prior (no codebook loss, EMA or restarts);
  ``tau`` is annealed by the trainer (``temperature``). Inference takes the argmax.
- ``GaussianBottleneck`` (``kind="kl"``, Kingma & Welling 2014; Rombach et al. 2022): the
  encoder emits a mean and a log-variance per latent channel; training decodes a sample
  ``mean + std * eps`` and pays ``KL(q(z|x) || N(0, I))``; inference takes the mean. There
  are no codes: ``indices`` is None.

KL terms are in nats per image divided by the image's pixel values (3 * S * S), the scale
the per-pixel reconstruction losses are on, times the config's ``kl_weight``: at weight 1
the ``kl`` kind is a plain VAE (an ELBO with a fixed decoder variance).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tessera.tokenizer.quantizer import QuantizerOutput


class GumbelQuantizer(nn.Module):
    """z: (B, K, h, w) logits -> relaxed (train) or hard (eval) codes, embedded to (B, C, h, w)."""

    def __init__(
        self, size: int, dim: int, kl_weight: float, pixels: int, usage_weight: float = 0.0
    ) -> None:
        super().__init__()
        self.size, self.dim, self.kl_weight, self.pixels = size, dim, kl_weight, pixels
        # DALL-E's per-cell KL asks each cell to be uncertain, not the batch to use many codes
        # (a run settled on 4% of them); this optional term is KL(mean q || uniform) over the
        # batch's cells, on the per-cell term's scale: 0 when codes are used evenly
        self.usage_weight = usage_weight
        self.embedding = nn.Embedding(size, dim)  # (K, C)
        self.temperature = 1.0  # set by the trainer each step (annealed); not saved

    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:  # (...) -> (..., C)
        return self.embedding(indices)

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:  # (N, C) -> (N,) euclidean
        return torch.cdist(flat, self.embedding.weight).argmin(dim=-1)

    def forward(self, logits: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = logits.shape
        indices = logits.argmax(dim=1)  # (B, h, w)
        if self.training:
            soft = F.gumbel_softmax(logits, tau=self.temperature, hard=False, dim=1)
        else:
            soft = F.one_hot(indices, self.size).permute(0, 3, 1, 2).to(logits.dtype)
        z_q = torch.einsum("bkhw,kc->bchw", soft, self.embedding.weight)
        # KL(q || uniform) = sum_k q log q + log K, summed over positions, per image
        log_q = F.log_softmax(logits, dim=1)
        kl = (log_q.exp() * log_q).sum(1) + math.log(self.size)  # (B, h, w)
        loss = self.kl_weight * kl.flatten(1).sum(1).mean() / self.pixels
        if self.usage_weight:
            mean_q = log_q.exp().mean(dim=(0, 2, 3))  # (K,) the batch's code distribution
            marginal = (mean_q * mean_q.clamp_min(1e-12).log()).sum() + math.log(self.size)
            loss = loss + self.usage_weight * marginal * h * w / self.pixels
        return QuantizerOutput(z_q, loss, indices)


class GaussianBottleneck(nn.Module):
    """z: (B, 2C, h, w) mean and log-variance -> a sample (train) or the mean (eval): (B,C,h,w)."""

    def __init__(self, dim: int, kl_weight: float, pixels: int) -> None:
        super().__init__()
        self.dim, self.kl_weight, self.pixels = dim, kl_weight, pixels
        self.size = 0  # no codebook

    @staticmethod
    def moments(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = z.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def sample(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, logvar = self.moments(z)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * eps

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        mean, logvar = self.moments(z)
        z_s = self.sample(z) if self.training else mean
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)  # (B, C, h, w)
        loss = self.kl_weight * kl.flatten(1).sum(1).mean() / self.pixels
        return QuantizerOutput(z_s, loss, None)  # type: ignore[arg-type]
