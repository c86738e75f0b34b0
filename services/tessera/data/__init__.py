"""Tessera data sets: Twemoji (real) and procedural shapes (synthetic), cached as arrays.

``load_dataset(name, split)`` reads a prepared data set (``tessera data prepare NAME``).
"""

from tessera.data.dataset import ImageTextDataset, load_dataset

__all__ = ["ImageTextDataset", "load_dataset"]
