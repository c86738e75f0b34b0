"""``tessera train clip``: contrastive training of the CLIP projection and image tower.

The frozen MiniLM runs once over every caption of the training split (cached beside the
data sets); each step then draws a batch of images, one random caption per image, a small
random translation, and minimises the symmetric InfoNCE loss. ``OUT`` is itself a component
directory (``config.json`` + ``model.safetensors``) with ``train_state.json`` /
``optimizer.safetensors`` beside it for ``--resume`` and ``loss.png`` for people.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tessera.clip.eval import embed_images, retrieval_metrics
from tessera.clip.model import CLIPConfig, CLIPModel
from tessera.common.checkpoint import read_config, save_component
from tessera.training import captions
from tessera.training.cli import (
    add_run_arguments,
    add_training_arguments,
    start_model,
    training_run,
)
from tessera.training.images import random_translate, to_float
from tessera.training.loop import Epochs, Steps, due
from tessera.training.optim import optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.state import save_train_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, steps=3000)
    parser.add_argument("--preset", choices=["default", "small", "tiny"], default="default")
    parser.add_argument("--embed-dim", type=int, default=None, help="override D")
    parser.add_argument("--shift", type=int, default=3, help="max random translation, px")
    add_training_arguments(
        parser, batch_size=128, lr=1e-3, weight_decay=0.05, warmup=100, every=250, threads=1
    )


def build_config(args: argparse.Namespace) -> CLIPConfig:
    config = {
        "default": CLIPConfig(),
        "small": CLIPConfig(channels=[32, 64, 128]),  # ~4x cheaper: short CPU runs
        "tiny": CLIPConfig.tiny(),
    }[args.preset]
    if args.embed_dim:
        config.embed_dim = args.embed_dim
    return config


@training_run
def run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from tessera.data import load_dataset

    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    heldout = load_dataset(args.dataset, "heldout", data_dir=args.data_dir)
    texts, per_image = captions.caption_table(train.captions)
    # Images with the same canonical caption are one concept to the text (shapes jitter).
    _, canon = captions.caption_table([caps[:1] for caps in train.captions])
    concept = torch.tensor([c[0] for c in canon])
    ho_texts, ho_ids = captions.caption_table([caps[:1] for caps in heldout.captions])
    cache = captions.text_cache_dir(args.data_dir)
    pooled = captions.encode_captions(texts, cache)["pooled"].to(device)  # (M,384)
    ho_pooled = captions.encode_captions(ho_texts, cache)["pooled"].to(device)
    ho_ids = torch.tensor([i[0] for i in ho_ids])
    images = torch.from_numpy(np.ascontiguousarray(train.images))  # (N,64,64,3) uint8
    ho_images = torch.from_numpy(np.ascontiguousarray(heldout.images))

    model, optimizer, step, history = start_model(
        args, out, lambda: CLIPModel(build_config(args)), device
    )
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    print(f"CLIP {n_params / 1e6:.2f}M params, {len(images)} train images, {len(texts)} captions")

    rng = np.random.default_rng(args.seed + step)
    gen = torch.Generator().manual_seed(args.seed + step)
    extra = {"dataset": args.dataset, "train_images": len(images)}

    def checkpoint() -> None:
        save_component(out, model, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(out / "loss.png", history, ["loss", "logit_scale_exp", "heldout_r5"], "CLIP")

    batches = Epochs(len(images), args.batch_size, rng)
    loop = Steps(step, args.steps, args.max_minutes, "train clip")
    bar, clock = loop.bar, loop.clock
    while loop.running(step):
        idx = batches.next()
        cap = captions.sample_captions(per_image, idx, rng)
        x = random_translate(to_float(images[idx]), args.shift, gen).to(device)
        cap = torch.from_numpy(cap).to(device)
        groups = concept[torch.from_numpy(idx)].to(device)
        set_lr(optimizer, clock.lr(step, args.lr, args.warmup))
        model.train()
        loss = model(x, pooled[cap], groups=groups)
        optimizer_step(model, optimizer, loss)
        model.clamp_logit_scale()
        step += 1
        scale = model.logit_scale.exp().item()
        history.append({"step": step, "loss": loss.item(), "logit_scale_exp": scale})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale:.1f}")
        if due(step, args.eval_every, args.steps):
            model.eval()
            with torch.no_grad():
                img = embed_images(model, ho_images, device)
                m = retrieval_metrics(img, model.embed_text(ho_pooled), ho_ids)
            history[-1]["heldout_r5"] = m["image_to_text"]["r@5"]
            bar.write(
                f"step {step}: held-out R@1 {m['image_to_text']['r@1']:.3f} "
                f"R@5 {m['image_to_text']['r@5']:.3f} ({len(ho_texts)} captions)"
            )
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    loop.finish(out, checkpoint)
    kind = read_config(out)["_class_name"]
    print(f"done: {step} steps in {clock.elapsed():.0f}s -> {out} ({kind})")
    return 0
