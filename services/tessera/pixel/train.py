"""``tessera train pixel``: maximum likelihood on sub-pixels, for the Image Transformer
(``--arch transformer``, the ``pixel`` route's model) or the gated PixelCNN baseline
(``--arch pixelcnn``).

Images of the named data sets (``--dataset``, plus ``--also``) are shrunk to ``--size``
pixels a side; a step draws a batch, one random caption each, and minimises the 256-way
cross-entropy of every sub-pixel (``cond_dropout`` of the rows see the null condition, so
the model is also unconditional and guidance works). ``OUT`` gets ``config.json`` +
``model.safetensors``, the kit's resume state, ``loss.png`` (loss, train and held-out
bits/dim beside the per-channel histogram baseline) and ``samples/step_*.png``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tessera.common.checkpoint import CONFIG_NAME, save_component
from tessera.common.errors import InvalidArgument
from tessera.common.images import make_grid
from tessera.lm.sampling import SamplingParams
from tessera.pixel.data import (
    PixelData,
    bits_per_dim,
    histogram_bits,
    prepare_split,
    upscale,
)
from tessera.pixel.model import ImageTransformer, PixelConfig
from tessera.training.captions import sample_captions
from tessera.training.cli import (
    DATASETS,
    add_run_arguments,
    add_training_arguments,
    start_model,
    training_run,
)
from tessera.training.loop import Clock, due
from tessera.training.optim import optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.state import save_train_state

PRESETS: dict[str, dict] = {
    "small": dict(n_layer=4, n_head=4, n_embd=128),  # ~1M params: a GPU, or a long CPU run
    "mini": dict(n_layer=3, n_head=4, n_embd=64),  # ~0.2M: what 2 shared cores train in 25 min
    "tiny": dict(n_layer=2, n_head=2, n_embd=32),
}
SAMPLE_PROMPTS = 6
SAMPLE_SEEDS = 4


def fixed_rows(data: PixelData, count: int) -> list[int]:
    """Images with distinct canonical captions, evenly spread over the split."""
    seen, rows = set(), []
    for r in np.linspace(0, len(data.values) - 1, num=min(len(data.values), 8 * count)):
        if data.per_image[int(r)][0] not in seen:
            seen.add(data.per_image[int(r)][0])
            rows.append(int(r))
    return rows[:: max(1, len(rows) // count)][:count]


@torch.no_grad()
def sample_picture(
    model: torch.nn.Module,
    data: PixelData,
    rows: list[int],
    device: torch.device,
    seeds: int = SAMPLE_SEEDS,
) -> np.ndarray:
    """Per row: the real (shrunk) image, then ``seeds`` samples for its caption, 4x."""
    ids = torch.tensor([data.per_image[r][0] for r in rows]).repeat_interleave(seeds)
    text = data.text(ids, device)
    params = [SamplingParams(seed=s) for _ in rows for s in range(seeds)]
    samples = model.sample(text, params)
    tiles = []
    for i, r in enumerate(rows):
        tiles += [data.images[r], *samples[i * seeds : (i + 1) * seeds]]
    size = 4 * data.images.shape[1]
    return make_grid(list(upscale(np.stack(tiles), size)), columns=1 + seeds)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, steps=4000, out_help="pixel checkpoint directory")
    parser.add_argument(
        "--also", choices=list(DATASETS), action="append", default=[], help="more data sets"
    )
    parser.add_argument("--arch", choices=["transformer", "pixelcnn"], default="transformer")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels")
    parser.add_argument("--preset", choices=list(PRESETS), default="small")
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--n-embd", type=int, default=None)
    parser.add_argument("--query-block", type=int, default=None, help="sub-pixels per block")
    parser.add_argument("--memory-block", type=int, default=None, help="sub-pixels of memory")
    parser.add_argument("--cond-dropout", type=float, default=0.1)
    parser.add_argument("--guidance-scale", type=float, default=1.5)
    add_training_arguments(
        parser, batch_size=16, lr=2e-3, weight_decay=0.05, warmup=100, every=250, threads=2
    )


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.arch == "pixelcnn":
        from tessera.pixel.pixelcnn import PixelCNN, PixelCNNConfig

        config = PixelCNNConfig(
            image_size=args.size,
            cond_dropout=args.cond_dropout,
            **{k: v for k, v in (("n_layer", args.n_layer), ("hidden", args.n_embd)) if v},
        )
        return PixelCNN(config)
    row = 3 * args.size
    config = PixelConfig(
        image_size=args.size,
        query_block=args.query_block or row,
        memory_block=args.memory_block or 4 * row,
        cond_dropout=args.cond_dropout,
        guidance_scale=args.guidance_scale,
        **PRESETS[args.preset],
    )
    overrides = {"n_layer": args.n_layer, "n_embd": args.n_embd}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if config.n_embd % config.n_head:
        raise InvalidArgument(f"n_embd {config.n_embd} is not divisible by n_head {config.n_head}")
    return ImageTransformer(config)


@training_run
def run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    torch.manual_seed(args.seed)
    names = list(dict.fromkeys([args.dataset, *args.also]))
    data = prepare_split(names, "train", args.size, args.data_dir, device=device)
    heldout = {
        name: prepare_split([name], "heldout", args.size, args.data_dir, canonical_only=True)
        for name in names
    }
    model, optimizer, step, history = start_model(args, out, lambda: build_model(args), device)
    config = model.config
    baseline = {n: histogram_bits(data.values, ho.values) for n, ho in heldout.items()}
    print(
        f"{type(model).__name__} {model.num_params() / 1e6:.2f}M params, {len(data.values)} "
        f"train images ({'+'.join(names)}) at {config.image_size}px = {config.n_tokens} "
        f"sub-pixels each; held-out histogram baseline {baseline} bits/dim"
    )
    extra = {"datasets": names, "train_images": len(data.values), "histogram_bpd": baseline}
    rng = np.random.default_rng(args.seed + step)
    # PixelCNN samples with a full pass per sub-pixel: fewer of them
    rows = fixed_rows(data, SAMPLE_PROMPTS if args.arch == "transformer" else 3)
    seeds = SAMPLE_SEEDS if args.arch == "transformer" else 2
    title = f"{type(model).__name__} {config.image_size}x{config.image_size}"

    def evaluate() -> None:
        h = history[-1]
        h["train_bpd"] = bits_per_dim(model, data, device, limit=64)
        for name, ho in heldout.items():
            h[f"heldout_bpd_{name}"] = bits_per_dim(model, ho, device, limit=128)
            h[f"histogram_bpd_{name}"] = baseline[name]
        (out / "samples").mkdir(parents=True, exist_ok=True)
        picture = sample_picture(model, data, rows, device, seeds)
        Image.fromarray(picture).save(out / "samples" / f"step_{step:06d}.png")
        shown = {k: round(v, 3) for k, v in h.items() if "bpd" in k}
        bar.write(f"step {step}: {shown}")

    saved = [step]
    panels: list = [
        "loss",
        ("train_bpd", *(f"{k}_bpd_{n}" for n in names for k in ("heldout", "histogram"))),
    ]

    def checkpoint() -> None:
        saved[0] = step
        save_component(out, model, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(out / "loss.png", history, panels, title)

    out.mkdir(parents=True, exist_ok=True)
    order, cursor = rng.permutation(len(data.values)), 0
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.arch}", unit="step")
    clock = Clock(step, args.steps, args.max_minutes)
    while step < args.steps:
        if clock.out_of_time():
            bar.write(f"time limit reached at step {step}")
            break
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(data.values)), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        values = data.values[idx].to(device)
        text = data.text(torch.from_numpy(sample_captions(data.per_image, idx, rng)), device)
        set_lr(optimizer, clock.lr(step, args.lr, args.warmup))
        model.train()
        loss = model.nll(values, text, None)
        optimizer_step(model, optimizer, loss)
        step += 1
        history.append({"step": step, "loss": loss.item(), "seconds": round(clock.elapsed(), 1)})
        bar.update(1)
        bar.set_postfix(bpd=f"{loss.item() / math.log(2):.3f}")
        if due(step, args.eval_every, args.steps):
            evaluate()
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    bar.close()
    if history and "train_bpd" not in history[-1]:
        evaluate()
    if saved[0] != step or not (out / CONFIG_NAME).is_file():
        checkpoint()
    print(f"done: {step} steps in {clock.elapsed():.0f}s -> {out}")
    return 0
