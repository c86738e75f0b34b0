"""Deterministic, hash-based held-out splits.

A split must not move when the data set is re-prepared, when rows are reordered, or when a
few concepts are added upstream. So a concept's fate depends only on a salted SHA-256 of its
key and on the other concepts of its own stratum: inside each stratum the concepts are ranked
by hash and the lowest ``round(fraction * n)`` are held out. Adding a concept to one subgroup
can move at most one concept of that subgroup; no other subgroup changes.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

SPLIT_SALT = "tessera-split-v1"
SPLITS = ("train", "heldout", "all")


def stable_hash(key: str, salt: str = SPLIT_SALT) -> int:
    """A 64-bit integer from SHA-256 (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def stratified_heldout(
    concepts: Sequence[str],
    strata: Sequence[str],
    fraction: float = 0.1,
    salt: str = SPLIT_SALT,
) -> set[str]:
    """Held-out concept keys: per stratum, the ``round(fraction * n)`` lowest-hash concepts.

    ``concepts[i]`` belongs to ``strata[i]``; a concept listed several times (e.g. once per
    skin tone) counts once. Strata with fewer than ``0.5 / fraction`` concepts keep all of
    theirs in training, so every small subgroup is still seen by the models.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    by_stratum: dict[str, set[str]] = defaultdict(set)
    for concept, stratum in zip(concepts, strata, strict=True):
        by_stratum[stratum].add(concept)
    heldout: set[str] = set()
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum], key=lambda c: (stable_hash(c, salt), c))
        k = int(np.floor(fraction * len(members) + 0.5))
        heldout.update(members[:k])
    return heldout


def split_mask(heldout_rows: np.ndarray, split: str) -> np.ndarray:
    """Row selector (bool) for ``split`` given a per-row held-out flag."""
    heldout_rows = np.asarray(heldout_rows, dtype=bool)
    if split == "train":
        return ~heldout_rows
    if split == "heldout":
        return heldout_rows
    if split == "all":
        return np.ones_like(heldout_rows)
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
