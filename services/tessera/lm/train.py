"""``tessera train lm``: next-token training of ImageGPT on VQ codes of a data set.

The data is turned into what the LM reads once and cached beside the prepared data sets
(``<data_dir>/cache/``): the VQ codes of every image (``lm/codes-<tokenizer>-<images>.npy``,
keyed by the tokenizer's weight checksum and the images' content hash) and the MiniLM token
states of every caption (shared with the CLIP, prior and decoder trainers). A step draws a
batch of images, one random caption each, and minimises the cross-entropy of their codes
given the caption; ``cond_dropout`` of the rows see the null condition instead (for CFG).

``OUT`` is the LM component directory (``config.json`` + ``model.safetensors``), with
``optimizer.safetensors`` + ``train_state.json`` beside it for ``--resume``, ``loss.png`` and
``samples/step_*.png`` (fixed prompts, decoded with the tokenizer) for people.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from tessera.common.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    file_sha256,
    load_component,
    save_component,
)
from tessera.common.errors import InvalidArgument
from tessera.common.images import make_grid, tensor_to_arrays
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT, LMConfig, trim_text
from tessera.lm.sampling import SamplingParams, sample_tokens
from tessera.training.cache import cached_array
from tessera.training.captions import encode_split_captions, sample_captions, text_cache_dir
from tessera.training.cli import (
    add_run_arguments,
    add_training_arguments,
    start_model,
    training_run,
)
from tessera.training.components import component_dir
from tessera.training.images import to_float
from tessera.training.loop import Epochs, Steps, due
from tessera.training.optim import bf16_autocast, optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.state import save_train_state

PRESETS: dict[str, dict] = {
    "base": dict(n_layer=8, n_head=8, n_embd=256),  # ~6.5M params: GPU, or a long CPU run
    "small": dict(n_layer=4, n_head=4, n_embd=128),  # ~0.9M: minutes on 2 CPU cores
    "tiny": dict(n_layer=2, n_head=2, n_embd=32),  # tests and smoke runs
}
SAMPLE_PROMPTS = 8  # fixed prompts in samples/step_*.png
SAMPLE_SEEDS = 4


# ------------------------------------------------------------------------- tokenizer + codes


def load_tokenizer(directory: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, str]:
    """The VQ tokenizer and a short checksum of its weights (the code cache's key). The LM
    models token ids: a continuous (``kl``) tokenizer is refused."""
    cdir = component_dir(directory, "tokenizer")
    digest = file_sha256(cdir / WEIGHTS_NAME)[:16]
    tokenizer = load_component(cdir, device=device)
    if not getattr(tokenizer, "discrete", True):
        raise InvalidArgument(
            f"the tokenizer at {cdir} is continuous (kind {tokenizer.kind!r}): the ar LM needs a "
            "discrete tokenizer (vq or gumbel); a kl bundle serves the unclip route only"
        )
    return tokenizer, digest


@torch.no_grad()
def encode_images(
    tokenizer: nn.Module,
    images: np.ndarray,
    cache_dir: Path,
    tokenizer_digest: str,
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """uint8 (N, S, S, 3) -> VQ codes (N, h, w) int32, computed once per tokenizer + images."""
    image_digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
    path = Path(cache_dir) / f"codes-{tokenizer_digest}-{image_digest}.npy"

    def encode() -> np.ndarray:
        device = next(tokenizer.parameters()).device
        tokenizer.eval()
        chunks = []
        for i in tqdm(range(0, len(images), batch_size), desc="VQ codes", unit="batch"):
            x = to_float(torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])))
            chunks.append(tokenizer.encode(x.to(device)).to(torch.int32).cpu().numpy())
        return np.concatenate(chunks)

    return cached_array(path, encode, len(images))


@dataclass
class LMData:
    """One split, ready for the LM: codes, caption states, which captions each image has."""

    codes: torch.Tensor  # (N, L) int64
    states: torch.Tensor  # (M, T, 384) float16, T trimmed to the longest caption
    mask: torch.Tensor  # (M, T) bool
    per_image: list[list[int]]  # image -> caption ids into states
    texts: list[str]  # the M captions
    images: np.ndarray  # (N, S, S, 3) uint8, for sample grids

    def text(self, caption_ids: torch.Tensor, device: torch.device) -> TextBatch:
        states, mask = self.states[caption_ids], self.mask[caption_ids]
        states, mask = trim_text(states.to(device).float(), mask.to(device))
        # The LM reads per-token states only; pooled is not needed here.
        return TextBatch(states=states, mask=mask, pooled=states.new_zeros(len(states), 384))


def prepare_split(
    ds: object,
    tokenizer: nn.Module,
    tokenizer_digest: str,
    data_dir: Path | None,
    *,
    canonical_only: bool = False,
    device: torch.device | str = "cpu",
) -> LMData:
    """Codes and caption states for one split (both cached)."""
    cache = text_cache_dir(data_dir).parent / "lm"
    codes = encode_images(tokenizer, ds.images, cache, tokenizer_digest)
    texts, per_image, enc = encode_split_captions(
        ds.captions, data_dir, canonical_only=canonical_only, device=device
    )
    return LMData(
        codes=torch.from_numpy(codes.reshape(len(codes), -1).astype(np.int64)),
        states=enc["states"],
        mask=enc["mask"],
        per_image=per_image,
        texts=texts,
        images=ds.images,
    )


# ------------------------------------------------------------------------- losses + samples


@torch.no_grad()
def bits_per_token(
    model: ImageGPT, data: LMData, device: torch.device, *, limit: int = 1024, batch: int = 128
) -> float:
    """Mean conditional cross-entropy in bits per image token over (up to ``limit``) images,
    each with its canonical caption. Evenly spaced rows, so the number is repeatable."""
    model.eval()
    rows = np.linspace(0, len(data.codes) - 1, num=min(limit, len(data.codes))).astype(int)
    total, count = 0.0, 0
    for i in range(0, len(rows), batch):
        idx = rows[i : i + batch]
        codes = data.codes[idx].to(device)
        text = data.text(torch.tensor([data.per_image[j][0] for j in idx]), device)
        drop = torch.zeros(len(idx), dtype=torch.bool, device=device)
        _, loss = model(codes[:, :-1], text.states, text.mask, drop_cond=drop, targets=codes)
        total += loss.item() * codes.numel()
        count += codes.numel()
    return total / count / math.log(2)


@torch.no_grad()
def sample_grid(
    model: ImageGPT,
    tokenizer: nn.Module,
    data: LMData,
    rows: list[int],
    device: torch.device,
    *,
    seeds: int = SAMPLE_SEEDS,
    guidance_scale: float | None = None,
    temperature: float | None = None,
    top_k: int = 0,
    top_p: float = 1.0,
) -> np.ndarray:
    """One row per image index: the real image, its VQ reconstruction, then ``seeds``
    samples for its canonical caption. Returns one uint8 picture."""
    model.eval()
    caption_ids = torch.tensor([data.per_image[r][0] for r in rows]).repeat_interleave(seeds)
    text = data.text(caption_ids, device)
    params = [
        SamplingParams(temperature, top_k, top_p, guidance_scale, seed=s)
        for _ in rows
        for s in range(seeds)
    ]
    grids = sample_tokens(model, text, params)  # (R*seeds, h, w)
    samples = tensor_to_arrays(tokenizer.decode_indices(grids.to(device)))
    g = model.config.grid_size
    recon_codes = data.codes[rows].view(len(rows), g, g).to(device)
    recon = tensor_to_arrays(tokenizer.decode_indices(recon_codes))
    tiles = []
    for i, r in enumerate(rows):
        tiles += [data.images[r], recon[i], *samples[i * seeds : (i + 1) * seeds]]
    return make_grid(tiles, columns=2 + seeds)


def fixed_rows(data: LMData, count: int) -> list[int]:
    """Images with distinct canonical captions, evenly spread over the split."""
    seen, rows = set(), []
    for r in np.linspace(0, len(data.codes) - 1, num=min(len(data.codes), 8 * count)).astype(int):
        if data.per_image[r][0] not in seen:
            seen.add(data.per_image[r][0])
            rows.append(int(r))
    step = max(1, len(rows) // count)
    return rows[::step][:count]


def corrupt(
    codes: torch.Tensor, fraction: float, vocab_size: int, rng: np.random.Generator, device: object
) -> torch.Tensor:
    """Replace a random share (uniform in [0, fraction] per row) of the *input* codes with
    random ones. The targets stay clean, so the model learns to continue a grid sensibly after
    a code it would not have chosen: sampling feeds back its own draws, and a model that only
    ever saw real prefixes drifts after its first unlikely one (exposure bias)."""
    if fraction <= 0:
        return codes
    B, L = codes.shape
    share = torch.from_numpy(rng.uniform(0, fraction, size=(B, 1))).float()
    hit = torch.from_numpy(rng.random((B, L))).float() < share
    noise = torch.from_numpy(rng.integers(0, vocab_size, size=(B, L)))
    return torch.where(hit.to(device), noise.to(device), codes)


# ------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = {"--tokenizer": "tokenizer checkpoint"}
    add_run_arguments(parser, steps=5000, inputs=inputs, out_help="LM checkpoint directory")
    parser.add_argument("--preset", choices=list(PRESETS), default="small")
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--n-head", type=int, default=None)
    parser.add_argument("--n-embd", type=int, default=None)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--cond-dropout", type=float, default=0.1)
    parser.add_argument(
        "--guidance-scale", type=float, default=1.25, help="the model's default CFG scale"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.7, help="the model's default sampling temperature"
    )
    parser.add_argument(
        "--token-noise",
        type=float,
        default=0.0,
        help="replace up to this fraction of input codes with random ones (targets unchanged)",
    )
    add_training_arguments(
        parser, batch_size=64, lr=1e-3, weight_decay=0.1, warmup=200, every=500, threads=2
    )


def build_config(args: argparse.Namespace, tokenizer: nn.Module) -> LMConfig:
    overrides = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd")}
    config = LMConfig(
        vocab_size=int(tokenizer.codebook_size),
        grid_size=int(tokenizer.grid_size),
        dropout=args.dropout,
        cond_dropout=args.cond_dropout,
        guidance_scale=args.guidance_scale,
        temperature=args.temperature,
        **PRESETS[args.preset],
    )
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.n_embd % config.n_head:
        raise InvalidArgument(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
    return config


@training_run
def run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from tessera.data import load_dataset

    torch.manual_seed(args.seed)

    tokenizer, tok_digest = load_tokenizer(args.tokenizer, device)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    heldout = load_dataset(args.dataset, "heldout", data_dir=args.data_dir)
    data = prepare_split(train, tokenizer, tok_digest, args.data_dir, device=device)
    ho = prepare_split(
        heldout, tokenizer, tok_digest, args.data_dir, canonical_only=True, device=device
    )

    model, optimizer, step, history = start_model(
        args, out, lambda: ImageGPT(build_config(args, tokenizer)), device
    )
    config = model.config
    if (config.vocab_size, config.grid_size) != (tokenizer.codebook_size, tokenizer.grid_size):
        raise InvalidArgument(
            f"LM (vocab {config.vocab_size}, grid {config.grid_size}) does not match the "
            f"tokenizer (codebook {tokenizer.codebook_size}, grid {tokenizer.grid_size})"
        )
    print(
        f"ImageGPT {model.num_params() / 1e6:.2f}M params, {len(data.codes)} train images, "
        f"{len(data.texts)} captions, {config.n_tokens} tokens/image, vocab {config.vocab_size}"
    )

    rng = np.random.default_rng(args.seed + step)
    extra = {
        "dataset": args.dataset,
        "tokenizer_sha256": tok_digest,
        "train_images": len(data.codes),
    }
    rows = fixed_rows(data, SAMPLE_PROMPTS)
    autocast = bf16_autocast(device)  # bf16 on GPU; the CPU runs in float32

    def evaluate() -> None:
        history[-1]["heldout_bpt"] = bits_per_token(model, ho, device, limit=512)
        history[-1]["train_bpt"] = bits_per_token(model, data, device, limit=512)
        picture = sample_grid(model, tokenizer, data, rows, device)
        (out / "samples").mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(out / "samples" / f"step_{step:06d}.png")
        bar.write(
            f"step {step}: bits/token train {history[-1]['train_bpt']:.3f} "
            f"held-out {history[-1]['heldout_bpt']:.3f}"
        )

    saved = [step]

    def checkpoint() -> None:
        saved[0] = step
        save_component(out, model, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(out / "loss.png", history, ["loss", "train_bpt", "heldout_bpt"], "ImageGPT")

    out.mkdir(parents=True, exist_ok=True)
    batches = Epochs(len(data.codes), args.batch_size, rng)
    loop = Steps(step, args.steps, args.max_minutes, "train lm")
    bar, clock = loop.bar, loop.clock
    while loop.running(step):
        idx = batches.next()
        codes = data.codes[idx].to(device)
        text = data.text(torch.from_numpy(sample_captions(data.per_image, idx, rng)), device)
        # A time-boxed run plans its LR decay to end when the clock does, not at --steps.
        set_lr(optimizer, clock.lr(step, args.lr, args.warmup))
        model.train()
        with autocast:
            inputs = corrupt(codes[:, :-1], args.token_noise, config.vocab_size, rng, device)
            _, loss = model(inputs, text.states, text.mask, targets=codes)
        optimizer_step(model, optimizer, loss)
        step += 1
        history.append({"step": step, "loss": loss.item()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", bpt=f"{loss.item() / math.log(2):.2f}")
        if due(step, args.eval_every, args.steps):
            evaluate()
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    bar.close()
    if history and "heldout_bpt" not in history[-1]:
        evaluate()
    if saved[0] != step or not (out / CONFIG_NAME).is_file():
        checkpoint()
    print(f"done: {step} steps in {clock.elapsed():.0f}s -> {out}")
    return 0
