"""What the mixed-modal trainer reads: image data sets (captions both ways) and edit sets, as
image-tokenizer codes and text ids, and the batches of mixed sequences drawn from them.

Codes come from the bundle's image tokenizer through the ``ar`` LM's code cache
(``lm.train.encode_images``: computed once per tokenizer and images). An edit's target codes
can be made *canonical* (``canonical_targets``, ``train mixed --edit-targets canonical``):
the tokenizer sees the whole image, so re-encoding an edited scene changes most codes even
where no pixel changed (on the shapes edit set only 32% of the cells whose pixels are
untouched keep their code), and a model asked to predict them must redraw the scene; the
source's codes are kept there instead.
A batch row draws its task (``TASK_MIX``), then an example; conditions are dropped for
guidance at ``DROP`` rates (InstructPix2Pix drops each of its two conditions 5% of the
time, and both 5%).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tessera.common.images import tensor_to_arrays
from tessera.data.dataset import DATASETS, load_dataset
from tessera.data.edit_sets import EDIT_SETS, read_edit_set
from tessera.lm.train import encode_images
from tessera.mixed.sequences import Builder, Sequence
from tessera.mixed.text import TextCodec
from tessera.training.cache import cached_array

CANONICAL_VERSION = 1  # bump when canonical_targets changes (its results are cached)
TASK_MIX = {"t2i": 0.3, "i2t": 0.2, "edit": 0.5}
DROP = {"caption": 0.1, "instruction": 0.05, "source": 0.05, "both": 0.05}


@dataclass
class CaptionPart:
    """One image data set's split: codes and every caption's text ids."""

    name: str
    codes: np.ndarray  # (N, n_cells) int64
    captions: list[list[list[int]]]  # per image, per caption, text ids
    texts: list[list[str]]  # the captions as written (for evaluation)
    images: np.ndarray  # (N, 64, 64, 3) uint8

    def __len__(self) -> int:
        return len(self.codes)


@dataclass
class EditPart:
    """One edit set's split."""

    name: str
    source: np.ndarray  # (N, n_cells) int64 codes
    target: np.ndarray  # (N, n_cells) composited: the source's codes where nothing changed
    instructions: list[list[int]]
    texts: list[str]
    kinds: list[str]
    attributes: list[str]
    keys: list[str]
    source_images: np.ndarray  # (N, 64, 64, 3) uint8
    target_images: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


def _codes(tokenizer: torch.nn.Module, digest: str, images: np.ndarray, cache: Path):
    codes = encode_images(tokenizer, images, cache, digest)
    return codes.reshape(len(codes), -1).astype(np.int64)


def changed_cells(source: np.ndarray, target: np.ndarray, grid: int, margin: int = 1) -> np.ndarray:
    """(N, H, W, 3) image pairs -> (N, grid * grid) bool: cells where any pixel differs,
    grown by ``margin`` cells (a code's decoded patch bleeds into its neighbours)."""
    n, h, w, _ = source.shape
    diff = (source != target).any(-1).reshape(n, grid, h // grid, grid, w // grid)
    changed = diff.any(axis=(2, 4))  # (N, grid, grid)
    for _ in range(margin):  # a 3x3 max filter per step
        padded = np.pad(changed, ((0, 0), (1, 1), (1, 1)))
        changed = np.stack([padded[:, 1 + dy : 1 + dy + grid, 1 + dx : 1 + dx + grid]
                            for dy in (-1, 0, 1) for dx in (-1, 0, 1)]).any(0)  # fmt: skip
    return changed.reshape(n, grid * grid)


def composite_target(source: np.ndarray, target: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """Target codes where ``changed``, the source's elsewhere."""
    return np.where(changed, target, source)


@torch.no_grad()
def canonical_targets(
    tokenizer: torch.nn.Module,
    source: np.ndarray,
    target: np.ndarray,
    source_images: np.ndarray,
    target_images: np.ndarray,
    margins: tuple[int, ...] = (1, 2, 3),
    tolerance_db: float = 1.0,
) -> np.ndarray:
    """Per pair, the composite with the smallest margin that decodes within ``tolerance_db``
    PSNR of the target's own codes (else those codes): the edit written as the fewest changed
    cells that still draw the target as well as re-encoding it does. On the shapes edit set a
    fixed margin of 1 copies 70% of cells but loses recolours (the checker reads 0.79 of
    training targets vs 0.89); choosing per pair keeps the re-encoded target's quality."""
    grid = tokenizer.grid_size
    best = target.copy()

    def psnr(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows))
        for i in range(0, len(rows), 256):
            part = rows[i : i + 256]
            ids = torch.as_tensor(codes[part]).view(-1, grid, grid)
            pixels = tensor_to_arrays(tokenizer.decode_indices(ids)).astype(np.float64)
            err = ((pixels - target_images[part]) ** 2).mean(axis=(1, 2, 3))
            out[i : i + 256] = 10 * np.log10(255.0**2 / np.maximum(err, 1e-10))
        return out

    every = np.arange(len(target))
    floor = psnr(target, every) - tolerance_db
    open_rows = every
    for margin in tqdm(margins, desc="canonical edit targets", unit="margin"):
        changed = changed_cells(source_images[open_rows], target_images[open_rows], grid, margin)
        candidate = composite_target(source[open_rows], target[open_rows], changed)
        trial = best.copy()
        trial[open_rows] = candidate
        good = psnr(trial, open_rows) >= floor[open_rows]
        best[open_rows[good]] = candidate[good]
        open_rows = open_rows[~good]
        if not len(open_rows):
            break
    return best


def _canonical(
    tokenizer: torch.nn.Module,
    digest: str,
    source: np.ndarray,
    target: np.ndarray,
    source_images: np.ndarray,
    target_images: np.ndarray,
    cache: Path,
) -> np.ndarray:
    """``canonical_targets``, computed once per tokenizer and image pairs (decoding every
    pair up to four times takes minutes on a CPU)."""
    pairs = np.concatenate([source_images, target_images], axis=1)
    image_digest = hashlib.sha256(np.ascontiguousarray(pairs).tobytes()).hexdigest()[:16]
    path = cache / f"canonical-{CANONICAL_VERSION}-{digest}-{image_digest}.npy"
    codes = cached_array(
        path,
        lambda: canonical_targets(tokenizer, source, target, source_images, target_images),
        len(target),
    )
    return codes.astype(np.int64)


def split_rows(heldout: np.ndarray, split: str) -> np.ndarray:
    return {"train": ~heldout, "heldout": heldout, "all": np.ones_like(heldout)}[split]


def load_parts(
    names: Iterable[str],
    split: str,
    tokenizer: torch.nn.Module,
    digest: str,
    codec: TextCodec,
    data_dir: Path,
    canonical: bool = False,
) -> tuple[list[CaptionPart], list[EditPart]]:
    """Every named data set's ``split``, encoded (codes cached under ``<data_dir>/cache/lm``);
    edit targets re-encoded, or ``canonical`` (``canonical_targets``)."""
    cache = Path(data_dir) / "cache" / "lm"
    captions, edits = [], []
    for name in names:
        if name in DATASETS:
            ds = load_dataset(name, split, data_dir)
            captions.append(
                CaptionPart(
                    name,
                    _codes(tokenizer, digest, ds.images, cache),
                    [[codec.encode(c) for c in caps] for caps in ds.captions],
                    ds.captions,
                    ds.images,
                )
            )
        elif name in EDIT_SETS:
            es = read_edit_set(name, data_dir)
            es = es.subset(split_rows(es.heldout, split))
            source = _codes(tokenizer, digest, es.source, cache)
            target = _codes(tokenizer, digest, es.target, cache)
            if canonical:
                target = _canonical(tokenizer, digest, source, target, es.source, es.target, cache)
            edits.append(
                EditPart(
                    name,
                    source,
                    target,
                    [codec.encode(t) for t in es.instructions],
                    es.instructions,
                    es.kinds,
                    es.attributes,
                    es.keys,
                    es.source,
                    es.target,
                )
            )
        else:
            raise ValueError(f"unknown data set {name!r}; expected {[*DATASETS, *EDIT_SETS]}")
    return captions, edits


def corpus(names: Iterable[str], data_dir: Path) -> list[str]:
    """Every training caption and instruction of ``names``: what the text BPE learns from."""
    texts: list[str] = []
    for name in names:
        if name in DATASETS:
            texts += [c for caps in load_dataset(name, "train", data_dir).captions for c in caps]
        elif name in EDIT_SETS:
            es = read_edit_set(name, data_dir)
            texts += [t for t, h in zip(es.instructions, es.heldout, strict=True) if not h]
    return texts


class Batches:
    """Random mixed batches over the parts (a task by ``TASK_MIX``, then a part, then a row)."""

    def __init__(
        self,
        builder: Builder,
        captions: list[CaptionPart],
        edits: list[EditPart],
        rng: np.random.Generator,
        task_mix: dict[str, float] | None = None,
    ) -> None:
        self.builder, self.captions, self.edits, self.rng = builder, captions, edits, rng
        mix = dict(task_mix or TASK_MIX)
        if not captions:
            mix.pop("t2i"), mix.pop("i2t")
        if not edits:
            mix.pop("edit")
        if not mix:
            raise ValueError("no data: name at least one image data set or edit set")
        self.tasks = list(mix)
        weights = np.array([mix[t] for t in self.tasks], float)
        self.weights = weights / weights.sum()

    def _pick(self, parts: list) -> tuple:
        """A part drawn in proportion to its size, and a row of it."""
        sizes = np.array([len(p) for p in parts])
        k = int(self.rng.choice(len(parts), p=sizes / sizes.sum()))
        return parts[k], int(self.rng.integers(sizes[k]))

    def example(self) -> Sequence:
        b, rng = self.builder, self.rng
        task = self.tasks[int(rng.choice(len(self.tasks), p=self.weights))]
        if task in ("t2i", "i2t"):
            part, i = self._pick(self.captions)
            caption = part.captions[i][int(rng.integers(len(part.captions[i])))]
            codes = part.codes[i].tolist()
            if task == "i2t":
                return b.i2t(codes, caption)
            return b.t2i([] if rng.random() < DROP["caption"] else caption, codes)
        part, i = self._pick(self.edits)
        text, source = part.instructions[i], part.source[i].tolist()
        u = rng.random()
        if u < DROP["instruction"]:
            text = []
        elif u < DROP["instruction"] + DROP["source"]:
            source = None
        elif u < DROP["instruction"] + DROP["source"] + DROP["both"]:
            text, source = [], None
        return b.edit(text, source, part.target[i].tolist())

    def __call__(self, size: int) -> list[Sequence]:
        return [self.example() for _ in range(size)]
