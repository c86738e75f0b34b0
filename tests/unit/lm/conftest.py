"""Fixtures for the LM tests: a tiny model overfit on a few synthetic prompts."""

from __future__ import annotations

import pytest
import torch
from lm_helpers import fake_text, train_tiny

from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT, LMConfig

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def trained() -> tuple[ImageGPT, TextBatch, torch.Tensor, list[float]]:
    """A tiny model that has memorised 4 prompts -> 4 grids (and the null condition)."""
    torch.manual_seed(0)
    config = LMConfig.tiny(cond_dropout=0.25)
    model = ImageGPT(config)
    text = fake_text(4, seed=1)
    codes = torch.randint(0, config.vocab_size, (4, config.grid_size, config.grid_size))
    losses = train_tiny(model, text, codes, steps=300)
    return model, text, codes, losses
