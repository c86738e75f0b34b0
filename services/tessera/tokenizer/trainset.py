"""What the tokenizer trains on: a data set's images, plus edit sets' scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera.data import load_dataset
from tessera.data.edit_sets import read_edit_set


def training_images(
    dataset: str, edit_sets: list[str], data_dir: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """The training images (the data set's, then each edit set's training sources and
    targets) and a fixed, spread sample of held-out ones to monitor (interleaved)."""
    train, heldout = (
        load_dataset(dataset, "train", data_dir),
        load_dataset(dataset, "heldout", data_dir),
    )
    images, monitor = [train.images], [heldout.images]
    for name in edit_sets:
        edits = read_edit_set(name, data_dir)
        images += [edits.source[~edits.heldout], edits.target[~edits.heldout]]
        monitor.append(edits.target[edits.heldout])
    rng = np.random.default_rng(0)
    monitor = [m[rng.permutation(len(m))] for m in monitor]
    n = min(len(m) for m in monitor)  # round-robin, so the first images cover every source
    mixed = np.stack([m[:n] for m in monitor], axis=1).reshape(-1, *monitor[0].shape[1:])
    return np.concatenate(images), np.concatenate([mixed, *(m[n:] for m in monitor)])
