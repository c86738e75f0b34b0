"""Image bytes ↔ arrays ↔ tensors, with the validation every image-taking endpoint shares."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from tessera.common.errors import InvalidArgument
from tessera.common.limits import MAX_IMAGE_BYTES, MAX_IMAGE_SIDE
from tessera.v1 import common_pb2

Image.MAX_IMAGE_PIXELS = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE * 4  # decompression-bomb guard


def decode_image(data: bytes, size: int, *, resize: bool = True) -> np.ndarray:
    """PNG/JPEG bytes → uint8 array (size, size, 3), alpha composited on white.

    Raises InvalidArgument for empty, oversized or undecodable input, for images larger than
    MAX_IMAGE_SIDE, and (with ``resize=False``) for images not already ``size``×``size``.
    """
    if not data:
        raise InvalidArgument("image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidArgument(f"not a readable image: {e}") from e
    w, h = img.size
    if max(w, h) > MAX_IMAGE_SIDE:
        raise InvalidArgument(f"image is {w}x{h}; the largest side allowed is {MAX_IMAGE_SIDE}")
    if (w, h) != (size, size):
        if not resize:
            raise InvalidArgument(f"image is {w}x{h}; this model takes {size}x{size}")
        img = img.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
    return to_rgb_on_white(img)


def to_rgb_on_white(img: Image.Image) -> np.ndarray:
    """Composite transparency on white (Twemoji PNGs are RGBA) and return uint8 (H, W, 3)."""
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)


def encode_png(array: np.ndarray, *, scale: int = 1) -> bytes:
    """uint8 (H, W, 3) → PNG bytes, optionally upscaled by an integer factor (nearest)."""
    img = Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def arrays_to_tensor(arrays: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) → float (B, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(np.stack(list(arrays)))).float()
    return x.permute(0, 3, 1, 2) / 127.5 - 1.0


def tensor_to_arrays(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] → uint8 (B, H, W, 3)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(arrays: list[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tile uint8 (H, W, 3) images into one image, white padding, row-major."""
    if not arrays:
        raise ValueError("no images to tile")
    h, w, _ = arrays[0].shape
    rows = (len(arrays) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, columns)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = a
    return grid


def labelled(grid: np.ndarray, labels: list[str], path: Path, scale: int = 2) -> Path:
    """The grid scaled up, each row's label written to its left (wrapped, up to three lines)
    and a grey rule between rows, so a label reads as its own row's; saved as PNG at ``path``."""
    img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), 0)
    margin = 190
    canvas = Image.new("RGB", (img.width + margin, img.height), "white")
    canvas.paste(img, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row_h = img.height / max(len(labels), 1)
    for i, text in enumerate(labels):
        lines = textwrap.wrap(text, 30)[:3]
        top = int(row_h * (i + 0.5)) - 6 * len(lines)
        draw.multiline_text((6, top), "\n".join(lines), fill="black", spacing=2)
        if i:
            draw.line([(0, int(row_h * i)), (canvas.width, int(row_h * i))], fill=(210, 210, 210))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def pixels_to_proto(array: np.ndarray) -> common_pb2.Pixels:
    """uint8 (H, W, 3) → Pixels (raw RGB bytes: what deployments hand each other)."""
    h, w, _ = array.shape
    return common_pb2.Pixels(rgb=np.ascontiguousarray(array, np.uint8).tobytes(), width=w, height=h)


def pixels_from_proto(msg: common_pb2.Pixels, size: int | None = None) -> np.ndarray:
    """Pixels → uint8 (H, W, 3), resized to ``size``×``size`` when given and different.

    Raises InvalidArgument for a side out of [1, MAX_IMAGE_SIDE] or a byte count that is not
    height * width * 3."""
    h, w = msg.height, msg.width
    if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
        raise InvalidArgument(f"pixels are {w}x{h}; each side must be in [1, {MAX_IMAGE_SIDE}]")
    if len(msg.rgb) != h * w * 3:
        raise InvalidArgument(f"pixels hold {len(msg.rgb)} bytes; {w}x{h} RGB needs {h * w * 3}")
    array = np.frombuffer(msg.rgb, dtype=np.uint8).reshape(h, w, 3)
    return array if size is None else resize_array(array, size)


def resize_array(array: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) → (size, size, 3), Lanczos; the array itself when it already fits."""
    if array.shape[:2] == (size, size):
        return array
    img = Image.fromarray(array, "RGB").resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8)


def pixels_to_image(msg: common_pb2.Pixels, scale: int = 1) -> common_pb2.Image:
    """Pixels → a PNG Image, upscaled by an integer factor (nearest): the one encoding a
    returned image gets."""
    array = pixels_from_proto(msg)
    h, w, _ = array.shape
    return common_pb2.Image(png=encode_png(array, scale=scale), width=w * scale, height=h * scale)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data: bytes, size: int, name: str = "image") -> Image.Image:
    """A PNG of exactly ``size``×``size`` (an edit's source or mask), else InvalidArgument
    naming ``name``: empty, oversized, not a PNG, unreadable or of another size."""
    if not data:
        raise InvalidArgument(f"{name} is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidArgument(f"{name} is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidArgument(f"{name} must be a PNG")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as e:
        raise InvalidArgument(f"{name} is not a readable PNG: {e}") from e
    if img.size != (size, size):
        w, h = img.size
        raise InvalidArgument(f"{name} is {w}x{h}; this model edits {size}x{size} images")
    return img


def mask_alpha(data: bytes, size: int) -> np.ndarray:
    """An edit mask (OpenAI's: a PNG with an alpha channel, fully transparent where the image
    may change) -> its alpha, uint8 (size, size)."""
    img = read_png(data, size, "mask")
    if "A" not in img.getbands() and "transparency" not in img.info:
        raise InvalidArgument("mask must have an alpha channel (transparent where to edit)")
    return np.asarray(img.convert("RGBA"), dtype=np.uint8)[..., 3]


def editable_cells(alpha: np.ndarray, grid: int) -> list[bool]:
    """Row-major flags of a ``grid``×``grid`` token grid over ``alpha``: a cell may change
    when any pixel of its patch is fully transparent."""
    side = alpha.shape[0]
    if side % grid:
        raise InvalidArgument(f"a {side}px mask does not split into {grid}x{grid} cells")
    p = side // grid
    clear = (alpha == 0).reshape(grid, p, grid, p).any(axis=(1, 3))
    return clear.reshape(-1).tolist()
