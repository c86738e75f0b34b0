"""What the mixed-modal trainer reads: image data sets (captions both ways) and edit sets, as
image-tokenizer codes and text ids, and the batches of mixed sequences drawn from them.

Codes come from the bundle's image tokenizer through the ``ar`` LM's code cache
(``lm.train.encode_images``: computed once per tokenizer and images). A batch row draws its
task (``TASK_MIX``), then an example; conditions are dropped for guidance at
``DROP`` rates (InstructPix2Pix drops each of its two conditions 5% of the time, and both 5%).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tessera.data.dataset import DATASETS, load_dataset
from tessera.data.edit_sets import EDIT_SETS, read_edit_set
from tessera.lm.train import encode_images
from tessera.mixed.sequences import Builder, Sequence
from tessera.mixed.text import TextCodec

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
    target: np.ndarray  # (N, n_cells)
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


def split_rows(heldout: np.ndarray, split: str) -> np.ndarray:
    return {"train": ~heldout, "heldout": heldout, "all": np.ones_like(heldout)}[split]


def load_parts(
    names: Iterable[str],
    split: str,
    tokenizer: torch.nn.Module,
    digest: str,
    codec: TextCodec,
    data_dir: Path,
) -> tuple[list[CaptionPart], list[EditPart]]:
    """Every named data set's ``split``, encoded (codes cached under ``<data_dir>/cache/lm``)."""
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
            edits.append(
                EditPart(
                    name,
                    _codes(tokenizer, digest, es.source, cache),
                    _codes(tokenizer, digest, es.target, cache),
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
