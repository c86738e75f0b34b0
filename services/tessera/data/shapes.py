"""Procedural shapes: colour x shape x position x size, with an exact checker.

Every image is one filled shape on white: 6 colours x 4 shapes x 9 positions (3x3 grid) x 2
sizes = 432 attribute combinations, each rendered several times with a small seeded jitter of
position and size. ``check_image`` reads an image back into its attributes (or None when the
image is not a clean single shape); generators are scored with it. Four colour x shape pairs
never appear in training (``HELDOUT_PAIRS``) to measure compositional generalisation.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from tessera.data.dataset import IMAGE_SIZE, ImageTextDataset, save_dataset

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 205, 30),
    "green": (40, 160, 60),
    "blue": (40, 90, 220),
    "purple": (145, 60, 190),
}
SHAPES = ("circle", "square", "triangle", "cross")
POSITIONS = (
    "top left", "top", "top right",
    "left", "center", "right",
    "bottom left", "bottom", "bottom right",
)  # fmt: skip
SIZES: dict[str, float] = {"small": 10.0, "large": 18.0}  # bounding-box side in pixels
CELL_CENTERS = (12.0, 32.0, 52.0)  # x (and y) of the 3x3 grid's cell centres
CELL_EDGES = (22.0, 42.0)  # the checker's cell boundaries, half-way between centres
JITTER_PX, JITTER_SIZE = 2.0, 1.0  # seeded per-image offsets (uniform in +-)
HELDOUT_PAIRS = frozenset(
    {("red", "triangle"), ("green", "circle"), ("blue", "cross"), ("yellow", "square")}
)
SUPERSAMPLE = 4
INK_THRESHOLD = 100  # 255 - min(R, G, B) above this is "shape"; palette inks are >= 200


@dataclass(frozen=True)
class ShapeAttrs:
    color: str
    shape: str
    position: str
    size: str

    def __post_init__(self) -> None:
        for value, allowed in (
            (self.color, COLORS), (self.shape, SHAPES),
            (self.position, POSITIONS), (self.size, SIZES),
        ):  # fmt: skip
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {list(allowed)}")

    @property
    def key(self) -> str:
        return f"{self.color}-{self.shape}-{self.position.replace(' ', '_')}-{self.size}"


def all_attrs() -> list[ShapeAttrs]:
    return [ShapeAttrs(*c) for c in itertools.product(COLORS, SHAPES, POSITIONS, SIZES)]


def is_heldout(attrs: ShapeAttrs) -> bool:
    return (attrs.color, attrs.shape) in HELDOUT_PAIRS


# --- rendering ---------------------------------------------------------------------------


def shape_geometry(attrs: ShapeAttrs, seed: int | None) -> tuple[float, float, float]:
    row, col = divmod(POSITIONS.index(attrs.position), 3)
    cx, cy, side = CELL_CENTERS[col], CELL_CENTERS[row], SIZES[attrs.size]
    if seed is not None:
        dx, dy, ds = np.random.default_rng(seed).uniform(-1.0, 1.0, size=3)
        cx, cy, side = cx + dx * JITTER_PX, cy + dy * JITTER_PX, side + ds * JITTER_SIZE
    return cx, cy, side


def draw_shape(
    shape: str, cx: float, cy: float, side: float, color: tuple[int, int, int]
) -> Image.Image:
    """Draw at SUPERSAMPLE x resolution and box-filter down: anti-aliased edges."""
    k = SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = (
        (cx - side / 2) * k,
        (cy - side / 2) * k,
        (cx + side / 2) * k,
        (cy + side / 2) * k,
    )
    if shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=color)
    elif shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=color)
    elif shape == "triangle":  # apex up
        draw.polygon([(cx * k, y0), (x1, y1), (x0, y1)], fill=color)
    elif shape == "cross":  # a plus sign, arms a third of the side wide
        t = side * k / 6
        draw.rectangle([cx * k - t, y0, cx * k + t, y1], fill=color)
        draw.rectangle([x0, cy * k - t, x1, cy * k + t], fill=color)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def render(attrs: ShapeAttrs, *, seed: int | None = None) -> np.ndarray:
    """(64, 64, 3) uint8; ``seed`` adds a deterministic jitter (None: the canonical image)."""
    cx, cy, side = shape_geometry(attrs, seed)
    return np.asarray(draw_shape(attrs.shape, cx, cy, side, COLORS[attrs.color]), dtype=np.uint8)


# --- captions ----------------------------------------------------------------------------

POSITION_PHRASES = {
    "top left": "at the top left", "top": "at the top", "top right": "at the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "at the bottom left", "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}  # fmt: skip
_SYNONYMS = {"big": "large", "tiny": "small", "centre": "center", "middle": "center",
             "plus": "cross", "violet": "purple"}  # fmt: skip


def caption_for(attrs: ShapeAttrs) -> str:
    """'a small red circle at the top left'."""
    return f"a {attrs.size} {attrs.color} {attrs.shape} {POSITION_PHRASES[attrs.position]}"


def captions_for(attrs: ShapeAttrs) -> list[str]:
    """The canonical caption first, then two paraphrases (parse_caption reads all three)."""
    where = POSITION_PHRASES[attrs.position]
    return [
        caption_for(attrs),
        f"{attrs.color} {attrs.shape}, {attrs.size}, {where}",
        f"{where}, a {attrs.color} {attrs.shape} that is {attrs.size}",
    ]


def parse_caption(text: str) -> ShapeAttrs | None:
    """Attributes named in ``text`` (exactly one of each kind), else None."""
    words = [_SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", text.lower())]
    found: dict[str, set[str]] = {"color": set(), "shape": set(), "size": set()}
    for w in words:
        for kind, allowed in (("color", COLORS), ("shape", SHAPES), ("size", SIZES)):
            if w in allowed:
                found[kind].add(w)
    vertical = {w for w in words if w in ("top", "bottom")}
    horizontal = {w for w in words if w in ("left", "right")}
    if any(len(v) != 1 for v in found.values()) or len(vertical) > 1 or len(horizontal) > 1:
        return None
    if not vertical and not horizontal and "center" not in words:
        return None
    position = " ".join([*vertical, *horizontal]) or "center"
    return ShapeAttrs(found["color"].pop(), found["shape"].pop(), position, found["size"].pop())


# --- the checker -------------------------------------------------------------------------


def ink_mask(img: np.ndarray) -> np.ndarray:
    return (255 - img.min(axis=-1).astype(np.int32)) > INK_THRESHOLD


def check_image(img: np.ndarray, min_iou: float = 0.6) -> ShapeAttrs | None:
    """Read one (64, 64, 3) uint8 image back into attributes, or None if it is not one clean
    shape on white (noise, several blobs, an off-palette colour, an unknown outline)."""
    img = np.asarray(img)
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        return None
    img = img.astype(np.uint8)
    mask = ink_mask(img)
    area = int(mask.sum())
    if not 25 <= area <= 450:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    h, w = y1 - y0, x1 - x0
    if max(h, w) > 24 or abs(h - w) > 3:
        return None
    # Nothing but (near-)white outside the shape's box, grown by a pixel for anti-aliasing.
    ink = 255 - img.min(axis=-1).astype(np.int32)
    outside = np.ones_like(mask)
    outside[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = False
    if np.count_nonzero(ink[outside] > 40) > 0.01 * outside.sum():
        return None
    core = ink > 150
    if core.sum() < 10:
        return None
    mean = img[core].astype(np.float64).mean(axis=0)
    dists = {name: float(np.linalg.norm(mean - np.array(rgb))) for name, rgb in COLORS.items()}
    color = min(dists, key=dists.get)
    if dists[color] > 60:
        return None
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, (h + w) / 2
    best, best_iou = None, 0.0
    for shape in SHAPES:
        template = ink_mask(np.asarray(draw_shape(shape, cx, cy, side, (0, 0, 0))))
        iou = np.logical_and(mask, template).sum() / np.logical_or(mask, template).sum()
        if iou > best_iou:
            best, best_iou = shape, iou
    if best is None or best_iou < min_iou:
        return None
    col = int(np.searchsorted(CELL_EDGES, cx))
    row = int(np.searchsorted(CELL_EDGES, cy))
    size = "large" if side >= (SIZES["small"] + SIZES["large"]) / 2 else "small"
    return ShapeAttrs(color, best, POSITIONS[row * 3 + col], size)


# --- the data set ------------------------------------------------------------------------


def clean_share(images: np.ndarray) -> float:
    """Share of images the checker reads as one clean shape on white (any attributes)."""
    return float(np.mean([check_image(img) is not None for img in images]))


def make_dataset(seed: int = 0, per_combo: int = 8) -> tuple[ImageTextDataset, np.ndarray]:
    """All 432 combinations x ``per_combo`` jittered renders; returns (data set, held-out
    flags). Deterministic: image k of a combination uses seed (seed, combination, k)."""
    combos = all_attrs()
    rows = [(i, a, k) for i, a in enumerate(combos) for k in range(per_combo)]
    images = np.stack([render(a, seed=seed * 1_000_003 + i * 1_009 + k) for i, a, k in rows])
    names = {"color": list(COLORS), "shape": list(SHAPES), "position": list(POSITIONS),
             "size": list(SIZES)}  # fmt: skip
    labels = {
        kind: np.array([names[kind].index(getattr(a, kind)) for _, a, _ in rows], np.int64)
        for kind in names
    }
    ds = ImageTextDataset(
        name="shapes",
        images=images,
        captions=[captions_for(a) for _, a, _ in rows],
        labels=labels,
        label_names=names,
        keys=[f"{a.key}-{k}" for _, a, k in rows],
    )
    heldout = np.array([is_heldout(a) for _, a, _ in rows], bool)
    ds.heldout = heldout
    return ds, heldout


def prepare(data_dir: Path, *, seed: int = 0, per_combo: int = 8) -> Path:
    ds, heldout = make_dataset(seed=seed, per_combo=per_combo)
    meta = {
        "source": {"generator": "tessera.data.shapes", "seed": seed, "per_combo": per_combo},
        "split": {
            "unit": "colour x shape pair",
            "heldout_pairs": sorted(f"{c} {s}" for c, s in HELDOUT_PAIRS),
        },
    }
    return save_dataset(ds, heldout, Path(data_dir) / "shapes", meta)
