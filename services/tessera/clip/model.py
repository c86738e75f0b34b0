"""A small CLIP: a locked pretrained text tower with a trained projection, and a CNN image
tower trained from scratch, aligned with a symmetric InfoNCE loss and a learned temperature.

The text side is the frozen MiniLM sentence encoder (``tessera.common.text_encoder``); its
pooled 384-d embedding is an *input* here, so the encoder is not part of these weights. Only
the projection MLP is trained (the reverse of LiT, which locks the image tower).

    text:  pooled (B,384) -> MLP -> (B,D) -> L2 normalise
    image: x (B,3,64,64) in [-1,1] -> CNN -> global mean pool -> Linear -> (B,D) -> L2 normalise
    logits = exp(logit_scale) * img @ txt.T, loss = (CE(logits) + CE(logits.T)) / 2
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import TEXT_DIM, TextEncoder


@dataclass
class CLIPConfig:
    image_size: int = 64
    embed_dim: int = 256  # D, the shared space (the prior and the decoder use the same D)
    text_dim: int = TEXT_DIM  # MiniLM pooled width
    text_hidden: int = 512  # projection MLP width
    stem_channels: int = 32  # stride-2 stem: 64x64 -> 32x32
    channels: list[int] = field(
        default_factory=lambda: [64, 128, 256]
    )  # one stage each, /2 between
    blocks_per_stage: int = 1
    dropout: float = 0.0
    init_logit_scale: float = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
    max_logit_scale: float = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100

    @classmethod
    def tiny(cls, **overrides: object) -> CLIPConfig:
        """A few-thousand-parameter model for tests and `tessera models init`."""
        base = cls(
            embed_dim=32, text_hidden=64, stem_channels=8, channels=[16, 32], blocks_per_stage=1
        )
        return replace(base, **overrides)


# ---------------------------------------------------------------------------- text tower


class TextProjection(nn.Module):
    """MLP with a linear skip: keeps MiniLM's geometry available from step 0."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.skip = nn.Linear(config.text_dim, config.embed_dim, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(config.text_dim, config.text_hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.text_hidden, config.embed_dim),
        )

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.skip(pooled) + self.mlp(pooled)  # (B,384) -> (B,D)


# ---------------------------------------------------------------------------- image tower


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class ImageEncoder(nn.Module):
    """Stride-2 stem, then stages of ResBlocks with stride-2 convs between them."""

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, config.stem_channels, 4, stride=2, padding=1)  # S -> S/2
        layers: list[nn.Module] = []
        c = config.stem_channels
        for i, c_out in enumerate(config.channels):
            if i > 0:
                layers.append(nn.Conv2d(c, c, 3, stride=2, padding=1))  # halve the grid
            for _ in range(config.blocks_per_stage):
                layers.append(ResBlock(c, c_out, config.dropout))
                c = c_out
        self.stages = nn.Sequential(*layers)
        self.norm = nn.GroupNorm(_groups(c), c)
        self.proj = nn.Linear(c, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x))  # (B,C,s,s)
        h = F.silu(self.norm(h)).mean(dim=(2, 3))  # (B,C)
        return self.proj(h)  # (B,D)


# ---------------------------------------------------------------------------- loss


def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of normalised (B,D) pairs.

    ``groups`` (B,) marks rows that show one concept (shapes renders of the same attributes,
    drawn with different phrasings of their caption): those pairs are positives too, with the
    target probability spread evenly over them, instead of being pushed apart as false
    negatives. (Rows sharing an identical caption need no groups: identical texts give
    identical logits, and the plain loss already treats them alike.)
    """
    logits = logit_scale.exp() * image_emb @ text_emb.t()  # (B,B)
    if groups is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    same = (groups[:, None] == groups[None, :]).to(logits.dtype)  # (B,B), symmetric
    target = same / same.sum(dim=1, keepdim=True)
    loss_i = -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
    loss_t = -(target * F.log_softmax(logits.t(), dim=1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


# ---------------------------------------------------------------------------- model


class CLIPModel(nn.Module):
    config_class = CLIPConfig

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.text_proj = TextProjection(config)
        self.image_encoder = ImageEncoder(config)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def embed_text(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B,384) MiniLM pooled embeddings -> (B,D) L2-normalised CLIP text embeddings."""
        if pooled.dim() != 2 or pooled.shape[1] != self.config.text_dim:
            raise InvalidArgument(
                f"pooled text must be (B, {self.config.text_dim}); got {tuple(pooled.shape)}"
            )
        return F.normalize(self.text_proj(pooled.to(self.logit_scale.dtype)), dim=-1)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) float in [-1,1] -> (B,D) L2-normalised CLIP image embeddings."""
        s = self.config.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise InvalidArgument(f"images must be (B, 3, {s}, {s}); got {tuple(x.shape)}")
        return F.normalize(self.image_encoder(x.to(self.logit_scale.dtype)), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str], encoder: TextEncoder) -> torch.Tensor:
        """Convenience: captions -> (B,D) through the frozen encoder and the projection."""
        pooled = encoder.encode(texts).pooled.to(self.logit_scale.device)
        return self.embed_text(pooled)

    def clamp_logit_scale(self) -> None:
        """Call after each optimiser step (CLIP clips the temperature at 100)."""
        with torch.no_grad():
            self.logit_scale.clamp_(0.0, self.config.max_logit_scale)

    def forward(
        self, x: torch.Tensor, pooled: torch.Tensor, groups: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images (B,3,S,S) and their captions' pooled embeddings (B,384) -> scalar loss."""
        return clip_loss(self.embed_image(x), self.embed_text(pooled), self.logit_scale, groups)
