"""Captions: per-image caption tables, the MiniLM caption cache, and caption sampling."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from tessera.common.text_encoder import shared_text_encoder


def caption_table(captions: list[list[str]]) -> tuple[list[str], list[list[int]]]:
    """Per-image caption lists -> (unique captions, per-image indices into them)."""
    index: dict[str, int] = {}
    per_image = [[index.setdefault(c, len(index)) for c in caps] for caps in captions]
    return list(index), per_image


def text_cache_dir(data_dir: Path | None) -> Path:
    """Where MiniLM outputs of captions are cached: beside the prepared data sets, so the
    CLIP run, the prior run and both evals encode each caption list once."""
    from tessera.data.dataset import default_data_dir

    return default_data_dir(data_dir) / "cache" / "minilm"


def encode_captions(
    texts: list[str],
    cache_dir: Path,
    *,
    states: bool = False,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """MiniLM outputs for ``texts``, computed once and cached by content hash.

    Returns ``pooled`` (N,384) float32 and, with ``states``, ``states`` (N,T,384) float16 and
    ``mask`` (N,T) bool, where T is trimmed to the longest caption (padding carries nothing).
    The cache always holds all three (the encoder computes them together anyway).
    """
    digest = hashlib.sha256("\x1f".join(texts).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"minilm-{digest}.safetensors"
    keys = ("pooled", "states", "mask") if states else ("pooled",)
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in keys}
        except Exception:  # a torn or stale cache file: encode again
            path.unlink(missing_ok=True)
    encoder = shared_text_encoder(str(device))
    pooled, all_states, masks = [], [], []
    for i in tqdm(range(0, len(texts), batch_size), desc="MiniLM captions", unit="batch"):
        batch = encoder.encode(texts[i : i + batch_size])
        pooled.append(batch.pooled.float().cpu())
        all_states.append(batch.states.half().cpu())
        masks.append(batch.mask.cpu())
    mask = torch.cat(masks)
    t = int(mask.sum(1).max())
    out = {
        "pooled": torch.cat(pooled),
        "states": torch.cat(all_states)[:, :t].contiguous(),
        "mask": mask[:, :t].contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(out, str(tmp))
    tmp.replace(path)  # never leave a half-written cache under the real name
    return {k: out[k] for k in keys}


def encode_split_captions(
    captions: list[list[str]],
    data_dir: Path | None,
    *,
    canonical_only: bool = False,
    device: torch.device | str = "cpu",
) -> tuple[list[str], list[list[int]], dict[str, torch.Tensor]]:
    """A split's per-image captions (only the first, canonical one each with
    ``canonical_only``) -> (unique captions, per-image ids, their MiniLM ``pooled``, ``states``
    and ``mask`` from the shared cache)."""
    if canonical_only:
        captions = [caps[:1] for caps in captions]
    texts, per_image = caption_table(captions)
    encoded = encode_captions(texts, text_cache_dir(data_dir), states=True, device=device)
    return texts, per_image, encoded


def sample_captions(
    per_image: list[list[int]], idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One random caption id for each image in ``idx``."""
    return np.array([per_image[i][rng.integers(len(per_image[i]))] for i in idx], dtype=np.int64)
