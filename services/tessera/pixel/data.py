"""What the pixel models read: data-set images shrunk to S x S as sub-pixel sequences, their
captions' MiniLM outputs, bits per dimension and the per-channel histogram baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tessera.common.text_encoder import TextBatch
from tessera.lm.model import trim_text
from tessera.training.captions import encode_split_captions


def shrink(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3), box-filtered (each pixel the mean of its
    area: at 16 px a 64 px emoji keeps its colours)."""
    if images.shape[1] == size:
        return images
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((size, size), Image.BOX)) for im in images]
    )


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, S, S, 3) -> (N, size, size, 3), nearest neighbour (integer factor)."""
    factor = size // images.shape[1]
    return images.repeat(factor, axis=1).repeat(factor, axis=2)


@dataclass
class PixelData:
    """One split: (N, 3*S*S) values in raster R, G, B order and the caption table."""

    values: torch.Tensor  # (N, L) int64
    images: np.ndarray  # (N, S, S, 3) uint8
    states: torch.Tensor  # (M, T, 384) float16
    mask: torch.Tensor  # (M, T) bool
    pooled: torch.Tensor  # (M, 384) float32
    per_image: list[list[int]]
    texts: list[str]

    def text(self, caption_ids: torch.Tensor, device: torch.device) -> TextBatch:
        states, mask = trim_text(
            self.states[caption_ids].to(device).float(), self.mask[caption_ids].to(device)
        )
        return TextBatch(states=states, mask=mask, pooled=self.pooled[caption_ids].to(device))


def prepare_split(
    datasets: list[str],
    split: str,
    size: int,
    data_dir: Path | None,
    *,
    canonical_only: bool = False,
    device: torch.device | str = "cpu",
) -> PixelData:
    """The named data sets' ``split``, concatenated, shrunk to ``size``. Captions are
    encoded per data set (the MiniLM cache the other trainers share)."""
    from tessera.data import load_dataset

    images, per_image, texts, encoded = [], [], [], []
    for name in datasets:
        ds = load_dataset(name, split, data_dir=data_dir)
        own_texts, own_per_image, enc = encode_split_captions(
            ds.captions, data_dir, canonical_only=canonical_only, device=device
        )
        per_image += [[len(texts) + i for i in ids] for ids in own_per_image]
        texts += own_texts
        images.append(shrink(ds.images, size))
        encoded.append(enc)
    T = max(e["states"].shape[1] for e in encoded)
    pad = [(e, T - e["states"].shape[1]) for e in encoded]
    all_images = np.concatenate(images)
    return PixelData(
        values=torch.from_numpy(all_images.reshape(len(all_images), -1).astype(np.int64)),
        images=all_images,
        states=torch.cat([torch.nn.functional.pad(e["states"], (0, 0, 0, p)) for e, p in pad]),
        mask=torch.cat([torch.nn.functional.pad(e["mask"], (0, p)) for e, p in pad]),
        pooled=torch.cat([e["pooled"] for e in encoded]),
        per_image=per_image,
        texts=texts,
    )


def histogram_bits(train: torch.Tensor, heldout: torch.Tensor) -> float:
    """The baseline: bits per sub-pixel of ``heldout`` under each channel's empirical
    intensity histogram on ``train`` (add-one smoothed), (N, 3*S*S) values."""
    total = 0.0
    for c in range(3):
        counts = torch.bincount(train[:, c::3].reshape(-1), minlength=256).double() + 1
        logp = torch.log2(counts / counts.sum())
        total -= float(logp[heldout[:, c::3].reshape(-1)].sum())
    return total / heldout.numel()


@torch.no_grad()
def bits_per_dim(
    model: torch.nn.Module,
    data: PixelData,
    device: torch.device,
    *,
    limit: int = 256,
    batch: int = 32,
    unconditional: bool = False,
) -> float:
    """Mean cross-entropy in bits per sub-pixel over up to ``limit`` evenly spaced images with
    their canonical captions (or the null condition)."""
    was_training = model.training
    model.eval()
    rows = np.linspace(0, len(data.values) - 1, num=min(limit, len(data.values))).astype(int)
    total, count = 0.0, 0
    for i in range(0, len(rows), batch):
        idx = rows[i : i + batch]
        values = data.values[idx].to(device)
        text = data.text(torch.tensor([data.per_image[j][0] for j in idx]), device)
        drop = torch.full((len(idx),), unconditional, dtype=torch.bool, device=device)
        loss = model.nll(values, text, drop)
        total += loss.item() * values.numel()
        count += values.numel()
    model.train(was_training)
    return total / count / math.log(2)
