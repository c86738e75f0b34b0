"""Device choice: CUDA when this process (a Ray replica given ``num_gpus``) sees a GPU."""

from __future__ import annotations

import torch


def pick_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A seeded generator on ``device`` (results are reproducible per device type)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen
