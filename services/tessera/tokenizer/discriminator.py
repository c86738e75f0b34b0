"""PatchGAN discriminator (pix2pix / taming-transformers' NLayerDiscriminator).

It scores overlapping patches as real or reconstructed, so it pushes the decoder towards
locally sharp, plausible texture without judging global layout (the reconstruction loss
handles that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DiscriminatorConfig:
    channels: int = 32  # width of the first layer (taming uses 64)
    n_layers: int = 2  # stride-2 layers after the first; 64x64 input -> 14x14 patch logits

    @classmethod
    def tiny(cls, **overrides: object) -> DiscriminatorConfig:
        return cls(**{"channels": 8, "n_layers": 1, **overrides})


class PatchDiscriminator(nn.Module):
    config_class = DiscriminatorConfig

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        c = config.channels
        layers: list[nn.Module] = [nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for n in range(1, config.n_layers + 1):
            stride = 2 if n < config.n_layers else 1
            c_next = config.channels * min(2**n, 8)
            layers += [
                nn.Conv2d(c, c_next, 4, stride, 1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.LeakyReLU(0.2, True),
            ]
            c = c_next
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))  # one logit per patch
        self.net = nn.Sequential(*layers)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,S,S) -> (B,1,h',w') logits
        return self.net(x)
