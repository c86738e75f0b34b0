"""Images as the models read them, and the one augmentation the trainers share."""

from __future__ import annotations

import torch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [-1,1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` px, filling with white. No flips: captions say
    "left"/"right" (shapes positions, arrows) and a mirror would make them lie."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )
