"""The in-memory data set every trainer uses, and its on-disk cache.

A prepared data set is a directory ``<data_dir>/<name>/`` holding

- ``images.npz``: ``images`` (N, 64, 64, 3) uint8 composited on white, ``heldout`` (N,) bool,
  and one ``label_<name>`` (N,) int64 array per label;
- ``meta.json``: keys, captions, label names, the split rule and the data's provenance;
- ``montage.png``: a look at the data.

Both files are read without pickle (``np.load(allow_pickle=False)``, JSON).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tessera.common.errors import InvalidArgument, NotFound
from tessera.common.images import make_grid
from tessera.common.settings import get_settings
from tessera.data.splits import split_mask

IMAGE_SIZE = 64
FORMAT_VERSION = 1
DATASETS = ("twemoji", "shapes")
IMAGES_FILE = "images.npz"
META_FILE = "meta.json"
MONTAGE_FILE = "montage.png"


@dataclass
class ImageTextDataset:
    name: str
    images: np.ndarray  # (N, 64, 64, 3) uint8, composited on white
    captions: list[list[str]]  # per image, >= 1 caption; [0] is the canonical one
    labels: dict[str, np.ndarray]  # label name -> (N,) int64 index into label_names[name]
    label_names: dict[str, list[str]]
    keys: list[str]  # stable id per image
    split: str = "all"
    heldout: np.ndarray | None = field(default=None, repr=False)  # (N,) bool, as prepared

    def __len__(self) -> int:
        return len(self.keys)

    def subset(self, rows: np.ndarray, split: str | None = None) -> ImageTextDataset:
        """Rows selected by a bool mask or an index array, in their original order."""
        rows = np.asarray(rows)
        idx = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return ImageTextDataset(
            name=self.name,
            images=self.images[idx],
            captions=[self.captions[i] for i in idx],
            labels={k: v[idx] for k, v in self.labels.items()},
            label_names=self.label_names,
            keys=[self.keys[i] for i in idx],
            split=split or self.split,
            heldout=None if self.heldout is None else self.heldout[idx],
        )

    def label_of(self, label: str, i: int) -> str:
        return self.label_names[label][int(self.labels[label][i])]


def default_data_dir(data_dir: Path | None = None) -> Path:
    return Path(data_dir) if data_dir is not None else Path(get_settings().data_dir)


def prepare_hint(name: str) -> str:
    return f"run `tessera data prepare {name}`"


def save_dataset(
    ds: ImageTextDataset, heldout: np.ndarray, directory: Path, meta_extra: dict
) -> Path:
    """Write ``images.npz`` + ``meta.json`` + ``montage.png`` (atomic-ish: temp then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"images": ds.images.astype(np.uint8), "heldout": np.asarray(heldout, bool)}
    arrays.update({f"label_{k}": v.astype(np.int64) for k, v in ds.labels.items()})
    tmp = directory / (IMAGES_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(directory / IMAGES_FILE)
    meta = {
        "format_version": FORMAT_VERSION,
        "name": ds.name,
        "count": len(ds),
        "heldout_count": int(np.sum(heldout)),
        "keys": ds.keys,
        "captions": ds.captions,
        "label_names": ds.label_names,
        **meta_extra,
    }
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    write_montage(ds.images, directory / MONTAGE_FILE)
    return directory


def write_montage(images: np.ndarray, path: Path, count: int = 256, columns: int = 16) -> Path:
    """A grid of evenly spaced images (a person's first look at the data)."""
    picks = np.linspace(0, len(images) - 1, num=min(count, len(images))).astype(int)
    Image.fromarray(make_grid([images[i] for i in picks], columns=columns)).save(path)
    return path


def read_dataset(name: str, data_dir: Path | None = None) -> ImageTextDataset:
    """Read a prepared data set (all rows); NotFound naming the command when absent/corrupt."""
    directory = default_data_dir(data_dir) / name
    hint = prepare_hint(name)
    images_path, meta_path = directory / IMAGES_FILE, directory / META_FILE
    if not images_path.is_file() or not meta_path.is_file():
        raise NotFound(f"data set {name!r} is not prepared under {directory}; {hint}")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(images_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise NotFound(f"data set {name!r} under {directory} is corrupt ({e}); {hint}") from e
    try:
        images, heldout = arrays.pop("images"), arrays.pop("heldout").astype(bool)
        n = int(meta["count"])
        labels = {k[len("label_") :]: v.astype(np.int64) for k, v in arrays.items()}
        ok = (
            meta.get("format_version") == FORMAT_VERSION
            and images.dtype == np.uint8
            and images.shape == (n, IMAGE_SIZE, IMAGE_SIZE, 3)
            and heldout.shape == (n,)
            and len(meta["keys"]) == n
            and len(meta["captions"]) == n
            and all(len(c) >= 1 for c in meta["captions"])
            and all(v.shape == (n,) for v in labels.values())
            and set(labels) == set(meta["label_names"])
            and all(
                len(v) == 0 or (v.min() >= 0 and v.max() < len(meta["label_names"][k]))
                for k, v in labels.items()
            )
        )
    except (KeyError, TypeError, ValueError) as e:
        raise NotFound(f"data set {name!r} under {directory} is corrupt ({e}); {hint}") from e
    if not ok:
        raise NotFound(
            f"data set {name!r} under {directory} is inconsistent (format {FORMAT_VERSION} "
            f"expected, arrays and meta.json must agree); {hint}"
        )
    return ImageTextDataset(
        name=name,
        images=images,
        captions=[list(c) for c in meta["captions"]],
        labels=labels,
        label_names={k: list(v) for k, v in meta["label_names"].items()},
        keys=list(meta["keys"]),
        split="all",
        heldout=heldout,
    )


def load_dataset(name: str, split: str = "train", data_dir: Path | None = None) -> ImageTextDataset:
    """A prepared data set's ``train``, ``heldout`` or ``all`` rows.

    ``twemoji`` holds out ~10% of emoji concepts (all skin tones of a held-out emoji go
    together), stratified by subgroup; ``shapes`` holds out whole colour x shape pairs. See
    docs/decisions/data-splits.md.
    """
    if name not in DATASETS:
        raise NotFound(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    ds = read_dataset(name, data_dir)
    if split == "all":
        return ds
    try:
        rows = split_mask(ds.heldout, split)
    except ValueError as e:
        raise InvalidArgument(str(e)) from e
    return ds.subset(rows, split=split)
