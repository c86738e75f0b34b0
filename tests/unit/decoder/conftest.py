"""Shared helpers for the decoder tests: synthetic conditions and a tiny random decoder."""

from __future__ import annotations

import pytest
import torch

from tessera.common.text_encoder import TextBatch
from tessera.decoder.model import DecoderConfig, LatentDecoder

torch.set_num_threads(1)


def fake_text(n: int, seed: int, length: int = 12) -> TextBatch:
    """Random MiniLM-shaped states with a varying number of real tokens per row."""
    gen = torch.Generator().manual_seed(seed)
    states = torch.randn(n, length, 384, generator=gen)
    lengths = torch.randint(2, length, (n,), generator=gen)
    mask = torch.arange(length).view(1, -1) < lengths.view(-1, 1)
    pooled = torch.nn.functional.normalize(states.mean(1), dim=-1)
    return TextBatch(states=states, mask=mask, pooled=pooled)


def fake_image_emb(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=-1)


def random_decoder(seed: int = 0, **overrides) -> LatentDecoder:
    """A tiny decoder whose zero-initialised layers (output conv, residual branches) are made
    random, so that its output depends on every input, as a trained one's does."""
    torch.manual_seed(seed)
    model = LatentDecoder(DecoderConfig.tiny(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture
def model() -> LatentDecoder:
    return random_decoder()
