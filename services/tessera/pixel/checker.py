"""A shapes checker that reads images at the pixel model's own resolution.

The exact checker (``tessera.data.shapes.check_image``) measures a shape's outline at 64 px.
At 16 px a small shape is 2-3 pixels wide: upscaled back to 64 px it is a blocky blob whose
outline matches no template, so that checker reads only 21-33% of *real* images shrunk to
16 px (the ceiling it set for the ``pixel`` route was below what a perfect model could
reach).

This one compares at the model's size instead. It renders every attribute combination
(colour x shape x position x size) at 64 px, canonical and with ``JITTERS`` seeded jitters as
the data set draws them, shrinks them exactly as the pixel models' data is shrunk (box
filter), and reads an image as the attributes of its nearest template (squared distance over
all sub-pixels). An image counts as a clean single shape only when that nearest template is
close (root-mean-square difference at most ``MAX_RMS``), holds about as much ink, and has
little ink away from it, so a blank canvas, noise or a second shape reads as nothing.

Its own accuracy on real images at the model's size is the ceiling the report prints beside
the route's: 92% at 16 px (colour, position and size always right; the misses are the
outline of small shapes), measured on 600 jittered renders.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tessera.data.shapes import ShapeAttrs, all_attrs, parse_caption, render
from tessera.pixel.data import shrink

JITTERS = 24  # jittered renders per combination, beside the canonical one
JITTER_SEED = 10_000_000  # far from the data set's per-image seeds
MAX_RMS = 16.0  # clean: nearest template this close (real images at 16 px: p99 8.3)
INK_RATIO = (0.6, 1.6)  # clean: ink within this factor of the nearest template's
MAX_STRAY = 0.05  # clean: ink off the nearest template's shape, at most this share of its
# ink (real images: at most 0.009; two shapes: 92% above it, the rest overlap)
ATTRIBUTES = ("color", "shape", "position", "size")


def _ink_map(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) -> (N, S, S) ink: how far each pixel's darkest channel is from white."""
    return 255.0 - images.min(axis=-1)


def _ink(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) -> (N,) total ink."""
    return _ink_map(images).reshape(len(images), -1).sum(axis=1)


def _stray_ink(images: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Ink of ``images`` (N, S, S, 3) away from ``shapes`` (N, S, S, 3, their templates): off
    the template's inked pixels grown by one pixel (a second shape, stray dots)."""
    footprint = _ink_map(shapes) > 20.0
    grown = footprint.copy()
    grown[:, 1:] |= footprint[:, :-1]
    grown[:, :-1] |= footprint[:, 1:]
    grown[:, :, 1:] |= footprint[:, :, :-1]
    grown[:, :, :-1] |= footprint[:, :, 1:]
    return np.where(grown, 0.0, _ink_map(images)).reshape(len(images), -1).sum(axis=1)


@lru_cache(maxsize=4)
def templates(side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[ShapeAttrs, ...]]:
    """-> flattened templates (M, side*side*3) float32, their attribute index (M,), their ink
    (M,), and the attribute combinations. About 10k renders: seconds, once per process."""
    attrs = tuple(all_attrs())
    renders, labels = [], []
    for j in range(JITTERS + 1):
        for i, a in enumerate(attrs):
            seed = None if j == 0 else JITTER_SEED + j * len(attrs) + i
            renders.append(render(a, seed=seed))
            labels.append(i)
    small = shrink(np.stack(renders), side).astype(np.float32)
    return small.reshape(len(small), -1), np.array(labels), _ink(small), attrs


def nearest_reads(images: np.ndarray) -> tuple[list[ShapeAttrs], np.ndarray]:
    """uint8 (N, S, S, 3) -> the nearest template's attributes per image, and whether the
    image is one clean shape (N,) bool: close to that template, about as much ink, little
    ink elsewhere."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"expected (N, S, S, 3) images, got {images.shape}")
    flat_t, labels, ink_t, attrs = templates(images.shape[1])
    flat = images.astype(np.float32).reshape(len(images), -1)
    # squared distances via |x|^2 - 2 x.t + |t|^2: one matrix product for the whole batch
    d2 = (flat**2).sum(1)[:, None] - 2.0 * flat @ flat_t.T + (flat_t**2).sum(1)[None]
    nearest = d2.argmin(axis=1)
    rms = np.sqrt(np.maximum(d2[np.arange(len(flat)), nearest], 0.0) / flat.shape[1])
    ink_near = np.maximum(ink_t[nearest], 1.0)
    ratio = _ink(images.astype(np.float32)) / ink_near
    shapes = flat_t[nearest].reshape(images.shape)
    stray = _stray_ink(images.astype(np.float32), shapes) / ink_near
    clean = (rms <= MAX_RMS) & (ratio >= INK_RATIO[0]) & (ratio <= INK_RATIO[1])
    clean &= stray <= MAX_STRAY
    return [attrs[labels[n]] for n in nearest], clean


def read_images(images: np.ndarray) -> list[ShapeAttrs | None]:
    """uint8 (N, S, S, 3) -> the attributes each image shows, or None when it is not one
    clean shape."""
    reads, clean = nearest_reads(images)
    return [r if ok else None for r, ok in zip(reads, clean, strict=True)]


def verdicts(images: np.ndarray, prompts: list[str]) -> dict:
    """Exact accuracy (a clean single shape with every attribute of the prompt), the share of
    clean single shapes, and per attribute how often the nearest template has the prompt's
    value (partial credit for messy images; chance is 1/6 colour, 1/4 shape, 1/9 position,
    1/2 size)."""
    reads, clean = nearest_reads(images)
    wanted = [parse_caption(p) for p in prompts]
    if any(w is None for w in wanted):
        raise ValueError("every prompt must be a shapes caption")
    exact = [bool(ok) and r == w for r, w, ok in zip(reads, wanted, clean, strict=True)]
    out = {"checker_acc": float(np.mean(exact)), "clean_single_shape": float(np.mean(clean))}
    for name in ATTRIBUTES:
        hits = [getattr(r, name) == getattr(w, name) for r, w in zip(reads, wanted, strict=True)]
        out[f"nearest_{name}_acc"] = float(np.mean(hits))
    return out
