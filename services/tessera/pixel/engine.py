"""Continuous batching for the Image Transformer: the LM's engine, as it is.

``ImageTransformer`` has the cache and the ``prefill`` / ``decode_rows`` calls that
``tessera.lm.engine.ContinuousSampler`` drives (one sub-pixel per running image per step,
guided images on two rows, requests joining at the next step and leaving when done, each
image drawing from its own seeded generator). The only difference is what a result looks
like: (n, S, S, 3) intensities instead of (n, g, g) token grids, -1 where not yet sampled, so
a progress report every ``3 * S`` steps is the image one row further down.
"""

from __future__ import annotations

import numpy as np
import torch

from tessera.common.text_encoder import TextBatch
from tessera.lm.engine import ContinuousSampler
from tessera.lm.sampling import SamplingParams
from tessera.pixel.model import CHANNELS, ImageTransformer


class PixelSampler(ContinuousSampler):
    """``submit(text, params, on_progress, progress_every)`` -> a future of (n, S, S, 3)
    int64 intensities; ``on_progress(done, partial)`` gets the same shape with -1 for the
    sub-pixels not sampled yet."""

    rows_name = "cache rows"

    def __init__(self, model: ImageTransformer, max_rows: int = 32, *, static: bool = False):
        super().__init__(model, max_rows, static=static)
        self.name = "Pixel"

    def _grids(self, k: int) -> torch.Tensor:
        S, first = self.config.image_size, self.first_seq[k]
        n = self.running[k].n
        return self.tokens[first : first + n].view(n, S, S, CHANNELS).clone()


def to_uint8(pixels: torch.Tensor, fill: int = 255) -> np.ndarray:
    """(n, S, S, 3) int64 with -1 for missing -> uint8 arrays, missing sub-pixels ``fill``."""
    out = torch.where(pixels < 0, torch.full_like(pixels, fill), pixels)
    return out.clamp(0, 255).to(torch.uint8).cpu().numpy()


@torch.no_grad()
def sample_pixels(
    model: ImageTransformer, text: TextBatch, params: list[SamplingParams], max_rows: int = 64
) -> torch.Tensor:
    """Offline sampling (training samples, evaluation): (n, S, S, 3) int64, through the same
    engine the deployment serves with."""
    was_training = model.training
    engine = PixelSampler(model, max_rows=max(max_rows, 2 * len(params)))
    try:
        return engine.submit(text, params).result()
    finally:
        engine.close()
        model.train(was_training)
