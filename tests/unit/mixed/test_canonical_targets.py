"""Canonical edit targets: the source's codes wherever the edit left the picture alone."""

from __future__ import annotations

import numpy as np
import torch

from tessera.mixed.data import canonical_targets, changed_cells, composite_target
from tessera.tokenizer.model import VQConfig, VQModel


def test_changed_cells_marks_cells_with_a_changed_pixel_and_grows_by_the_margin():
    source = np.zeros((1, 64, 64, 3), np.uint8)
    target = source.copy()
    target[0, 20, 30] = 255  # one pixel in cell (row 2, column 3) of an 8x8 grid
    exact = changed_cells(source, target, 8, margin=0).reshape(8, 8)
    assert exact.sum() == 1 and exact[2, 3]
    grown = changed_cells(source, target, 8, margin=1).reshape(8, 8)
    assert grown.sum() == 9 and grown[1:4, 2:5].all()
    corner = source.copy()
    corner[0, 0, 0] = 1
    assert changed_cells(source, corner, 8, margin=1).reshape(8, 8).sum() == 4  # clipped


def test_canonical_targets_are_the_target_or_a_composite_of_it():
    torch.manual_seed(0)
    tokenizer = VQModel(VQConfig.tiny(image_size=64, patch_size=4, channel_mult=(1, 2, 2))).eval()
    rng = np.random.default_rng(0)
    source_images = np.zeros((6, 64, 64, 3), np.uint8)
    target_images = source_images.copy()
    for i in range(6):  # a small square appears somewhere
        y, x = rng.integers(0, 56, 2)
        target_images[i, y : y + 8, x : x + 8] = (200, 40, 40)
    n = tokenizer.grid_size**2

    def encode(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
            return tokenizer.encode(x).reshape(len(images), n).numpy()

    source, target = encode(source_images), encode(target_images)
    got = canonical_targets(tokenizer, source, target, source_images, target_images)
    options = [target] + [
        composite_target(
            source, target, changed_cells(source_images, target_images, tokenizer.grid_size, m)
        )
        for m in (1, 2, 3)
    ]
    for i in range(6):
        assert any(np.array_equal(got[i], o[i]) for o in options)
    # with no quality floor the smallest margin always wins
    loose = canonical_targets(
        tokenizer, source, target, source_images, target_images, tolerance_db=1e9
    )
    assert np.array_equal(loose, options[1])
