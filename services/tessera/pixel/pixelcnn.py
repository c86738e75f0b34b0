"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): the baseline the Image Transformer is compared against.

* A **vertical stack** (convolutions over the rows above and the current row) and a
  **horizontal stack** (the current row, up to the current column); the vertical stack
  reaches the horizontal one shifted down a row, so no pixel sees itself or the future and
  there is no blind spot.
* **Sub-pixel order R, G, B**: hidden channels are three groups; at the current pixel the
  first layer's group g sees input channels < g (mask A) and later layers' group g sees
  hidden groups <= g (mask B). The output is a 256-way softmax per channel.
* **Gated units** ``tanh(a) * sigmoid(b)``, with the condition (the caption's pooled MiniLM
  embedding, or a learned null vector for ``cond_dropout`` of the rows: the same model is
  the unconditional one) added to ``a`` and ``b`` in every layer.

Sampling runs the whole network once per sub-pixel (no cache: 3 * S * S full passes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.text_encoder import TEXT_DIM, TextBatch
from tessera.lm.sampling import draw_uniforms, filter_and_draw, guide
from tessera.pixel.model import CHANNELS, LEVELS


@dataclass
class PixelCNNConfig:
    image_size: int = 16
    n_layer: int = 8
    hidden: int = 96  # channels per stack, a multiple of 3 (one group per colour)
    kernel: int = 5
    text_dim: int = TEXT_DIM
    cond_dropout: float = 0.1
    guidance_scale: float = 1.0
    temperature: float = 1.0

    @property
    def n_tokens(self) -> int:
        return CHANNELS * self.image_size * self.image_size


def channel_mask(out_ch: int, in_ch: int, out_groups: int, strict: bool) -> torch.Tensor:
    """(out, in) bool: output channel o (group o*3 // out, repeated per gate half) may read
    input channel i (group i*3 // in) when group(i) < group(o) (strict, mask A) or <=."""
    go = (torch.arange(out_ch) % out_groups) * CHANNELS // out_groups
    gi = torch.arange(in_ch) * CHANNELS // in_ch
    return gi.view(1, -1) < go.view(-1, 1) if strict else gi.view(1, -1) <= go.view(-1, 1)


class MaskedConv(nn.Conv2d):
    """A convolution whose last kernel column (the current pixel, for horizontal kernels)
    is channel-masked; ``center`` None leaves it unmasked (vertical stack)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], center: torch.Tensor | None):
        super().__init__(cin, cout, kernel)
        mask = torch.ones_like(self.weight)
        if center is not None:
            mask[:, :, -1, -1] = center.float()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


class GatedLayer(nn.Module):
    def __init__(self, config: PixelCNNConfig, cin: int, first: bool) -> None:
        super().__init__()
        h, k = config.hidden, config.kernel
        self.first, self.k = first, k
        self.v_conv = nn.Conv2d(cin, 2 * h, (k // 2 + 1, k))  # rows r-k//2..r
        center = channel_mask(2 * h, cin, h, strict=first)
        self.h_conv = MaskedConv(cin, 2 * h, (1, k // 2 + 1), center)  # cols c-k//2..c
        self.v_to_h = nn.Conv2d(2 * h, 2 * h, 1)
        self.h_out = MaskedConv(h, h, (1, 1), channel_mask(h, h, h, strict=False))
        self.cond = nn.Linear(config.text_dim, 4 * h)

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def forward(
        self, v: torch.Tensor, h: torch.Tensor, cond: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """v, h (B, cin, H, W); cond (B, D) -> v, h (B, hidden, H, W)."""
        k = self.k
        cv, ch = self.cond(cond)[:, :, None, None].chunk(2, dim=1)  # (B, 2h, 1, 1) each
        v_pre = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))  # (B, 2h, H, W)
        down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # row r gets rows <= r-1
        h_pre = self.h_conv(F.pad(h, (k // 2, 0, 0, 0))) + self.v_to_h(down)
        v_out = self.gate(v_pre + cv)
        h_gated = self.h_out(self.gate(h_pre + ch))
        return v_out, (h_gated if self.first else h + h_gated)


class PixelCNN(nn.Module):
    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig) -> None:
        super().__init__()
        if config.hidden % CHANNELS:
            raise ValueError(f"hidden must be a multiple of 3, got {config.hidden}")
        self.config = config
        h = config.hidden
        self.null_cond = nn.Parameter(torch.zeros(config.text_dim))
        self.layers = nn.ModuleList(
            [GatedLayer(config, CHANNELS if i == 0 else h, i == 0) for i in range(config.n_layer)]
        )
        self.out1 = MaskedConv(h, h, (1, 1), channel_mask(h, h, h, strict=False))
        self.out2 = MaskedConv(
            h,
            CHANNELS * LEVELS,
            (1, 1),
            channel_mask(CHANNELS * LEVELS, h, CHANNELS * LEVELS, strict=False),
        )

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def logits(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) intensities, cond (B, D) -> (B, 256, 3, H, W) (H < S: the
        first rows only, as sampling runs them)."""
        x = images.float() / 127.5 - 1.0
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, cond)
        out = self.out2(F.relu(self.out1(F.relu(h))))  # (B, 3*256, S, S)
        B, _, H, W = out.shape
        return out.view(B, CHANNELS, LEVELS, H, W).transpose(1, 2)

    def condition(self, text: TextBatch, drop: torch.Tensor | None) -> torch.Tensor:
        """The pooled caption embedding, the null vector where ``drop``; (B, D)."""
        cond = text.pooled.float()
        if drop is None and self.training and self.config.cond_dropout > 0:
            drop = torch.rand(cond.shape[0], device=cond.device) < self.config.cond_dropout
        if drop is not None:
            cond = torch.where(drop.view(-1, 1), self.null_cond.expand_as(cond), cond)
        return cond

    def nll(self, values: torch.Tensor, text: TextBatch, drop: torch.Tensor | None) -> torch.Tensor:
        """Mean cross-entropy (nats per sub-pixel); values (B, 3*S*S) raster R, G, B."""
        S = self.config.image_size
        images = values.view(-1, S, S, CHANNELS).permute(0, 3, 1, 2)  # (B, 3, S, S)
        return F.cross_entropy(self.logits(images, self.condition(text, drop)), images)

    @torch.no_grad()
    def sample(self, text: TextBatch, params: list) -> np.ndarray:
        """uint8 (B, S, S, 3): one full pass per sub-pixel, guided by each row's scale."""
        was_training = self.training
        self.eval()
        B, S, cfg = len(params), self.config.image_size, self.config
        device = self.null_cond.device
        scale = torch.tensor(
            [cfg.guidance_scale if p.guidance_scale is None else p.guidance_scale for p in params],
            device=device,
        )
        temp = torch.tensor([p.temperature or cfg.temperature for p in params], device=device)
        top_k = torch.tensor([p.top_k for p in params], device=device)
        top_p = torch.tensor([p.top_p for p in params], device=device)
        uniforms = draw_uniforms([p.seed for p in params], cfg.n_tokens, device)
        cond = self.condition(text, torch.zeros(B, dtype=torch.bool, device=device))
        null = self.condition(text, torch.ones(B, dtype=torch.bool, device=device))
        guided = bool((scale != 1).any())
        images = torch.zeros(B, CHANNELS, S, S, dtype=torch.long, device=device)
        for i in range(cfg.n_tokens):
            r, c, ch = i // CHANNELS // S, i // CHANNELS % S, i % CHANNELS
            seen = images[:, :, : r + 1]  # causal: rows below cannot change these logits
            if guided:
                both = self.logits(torch.cat([seen, seen]), torch.cat([cond, null]))
                logits = guide(both[:B, :, ch, r, c], both[B:, :, ch, r, c], scale)
            else:
                logits = self.logits(seen, cond)[:, :, ch, r, c]
            images[:, ch, r, c] = filter_and_draw(logits, temp, top_k, top_p, uniforms[:, i])
        self.train(was_training)
        return images.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
