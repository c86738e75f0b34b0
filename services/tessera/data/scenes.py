"""Shapes scenes: one or two shapes on white, rendered and read back exactly.

A scene extends :mod:`tessera.data.shapes` from one shape to a few, each in its own cell of the
3x3 grid. ``check_scene`` splits an image into its connected blobs and reads each one back with
the single-shape checker, so an edit's result can be scored exactly ("make the circle red":
is there still one circle, now red, where it was, and is the other shape untouched?).

Renders are rejection-sampled: a jittered scene whose shapes touch (two large shapes in
neighbouring cells can) is redrawn with the next seed, and finally without jitter, so every
scene in the data reads back as itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tessera.data.dataset import IMAGE_SIZE
from tessera.data.shapes import (
    COLORS,
    POSITIONS,
    ShapeAttrs,
    check_image,
    draw_shape,
    ink_mask,
    shape_geometry,
)

Scene = tuple[ShapeAttrs, ...]  # sorted by grid position (row-major), one shape per cell
MAX_SHAPES = 2
RENDER_TRIES = 4


def make_scene(shapes: Sequence[ShapeAttrs]) -> Scene:
    """The canonical scene of ``shapes``: sorted by position; ValueError on a shared cell."""
    scene = tuple(sorted(shapes, key=lambda a: POSITIONS.index(a.position)))
    if len({a.position for a in scene}) != len(scene):
        raise ValueError("two shapes in one cell: " + ", ".join(a.key for a in scene))
    if not 1 <= len(scene) <= MAX_SHAPES:
        raise ValueError(f"a scene holds 1 to {MAX_SHAPES} shapes, not {len(scene)}")
    return scene


def scene_key(scene: Scene) -> str:
    return "+".join(a.key for a in scene)


def _render_once(scene: Scene, seed: int | None) -> np.ndarray:
    # A shape's jitter follows its cell, so a shape an edit leaves alone renders identically
    # before and after. Shapes never overlap: the darker pixel of the layers is the scene.
    out = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 255, np.uint8)
    for attrs in scene:
        jitter = None if seed is None else seed * 16 + POSITIONS.index(attrs.position)
        cx, cy, side = shape_geometry(attrs, jitter)
        layer = np.asarray(draw_shape(attrs.shape, cx, cy, side, COLORS[attrs.color]), np.uint8)
        out = np.minimum(out, layer)
    return out


def _neighbours(scene: Scene) -> bool:
    """Whether two shapes sit in touching cells (only then can their jittered renders meet)."""
    cells = [divmod(POSITIONS.index(a.position), 3) for a in scene]
    return any(
        abs(r1 - r2) <= 1 and abs(c1 - c2) <= 1
        for i, (r1, c1) in enumerate(cells)
        for r2, c2 in cells[i + 1 :]
    )


def render_scenes(scenes: Sequence[Scene], *, seed: int | None = None) -> list[np.ndarray]:
    """(64, 64, 3) uint8 renders that ``check_scene`` reads back as ``scenes``, all with one
    jitter (from ``seed``; None: none) so shapes common to two scenes are pixel-identical.
    Jitters whose shapes touch are redrawn; the last resort is no jitter at all."""
    tries = [] if seed is None else [seed + k * 104_729 for k in range(RENDER_TRIES)]
    for s in [*tries, None]:
        images = [_render_once(scene, s) for scene in scenes]
        if all(
            not _neighbours(scene) or check_scene(img) == scene
            for scene, img in zip(scenes, images, strict=True)
        ):
            return images
    raise ValueError("scenes do not read back: " + ", ".join(scene_key(s) for s in scenes))


def render_scene(scene: Scene, *, seed: int | None = None) -> np.ndarray:
    """One scene's render (see ``render_scenes``)."""
    return render_scenes([scene], seed=seed)[0]


# --- the checker -------------------------------------------------------------------------


def components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a bool mask, as bool masks (largest first)."""
    labels = np.zeros(mask.shape, np.int32)
    found: list[np.ndarray] = []
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if labels[y0, x0]:
            continue
        n = len(found) + 1
        labels[y0, x0] = n
        stack = [(int(y0), int(x0))]
        while stack:
            y, x = stack.pop()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                        labels[yy, xx] = n
                        stack.append((yy, xx))
        found.append(labels == n)
    return sorted(found, key=lambda m: -int(m.sum()))


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` dilated by ``pixels`` in every direction (a square structuring element)."""
    out = mask.copy()
    for _ in range(pixels):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def check_scene(img: np.ndarray) -> Scene | None:
    """Read an image back into its scene, or None: every blob must be one clean shape of the
    palette, in its own cell, and there must be 1 to ``MAX_SHAPES`` of them."""
    img = np.asarray(img)
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        return None
    img = img.astype(np.uint8)
    blobs = [b for b in components(ink_mask(img)) if b.sum() >= 4]
    if not 1 <= len(blobs) <= MAX_SHAPES:
        return None
    # Faint ink (anti-aliasing, noise) must belong to some blob: near one, or nowhere.
    ink = 255 - img.min(axis=-1).astype(np.int32)
    near_any = _grow(np.logical_or.reduce(blobs), 2)
    if np.count_nonzero((ink > 40) & ~near_any) > 20:
        return None
    found = []
    for blob in blobs:
        alone = img.copy()
        alone[~_grow(blob, 2)] = 255  # whiten everything but this blob and its edge
        attrs = check_image(alone)
        if attrs is None:
            return None
        found.append(attrs)
    try:
        return make_scene(found)
    except ValueError:
        return None
