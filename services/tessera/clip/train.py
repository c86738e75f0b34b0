"""``tessera train clip``: contrastive training of the CLIP projection and image tower.

The frozen MiniLM runs once over every caption of the training split (cached under
``OUT/cache``); each step then draws a batch of images, one random caption per image, a small
random translation, and minimises the symmetric InfoNCE loss. ``OUT`` is itself a component
directory (``config.json`` + ``model.safetensors``) with ``train_state.json`` /
``optimizer.safetensors`` beside it for ``--resume`` and ``loss.png`` for people.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tessera.clip.model import CLIPConfig, CLIPModel
from tessera.common.checkpoint import load_component, read_config, save_component
from tessera.common.device import pick_device
from tessera.training.captions import (
    caption_table,
    encode_captions,
    sample_captions,
    text_cache_dir,
)
from tessera.training.images import random_translate, to_float
from tessera.training.optim import lr_at, make_optimizer, planned_steps
from tessera.training.plots import plot_curves
from tessera.training.state import has_checkpoint, load_train_state, save_train_state

# ---------------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["twemoji", "shapes"], required=True)
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=3000, help="total optimiser steps")
    parser.add_argument("--resume", action="store_true", help="continue from --out")
    parser.add_argument("--preset", choices=["default", "small", "tiny"], default="default")
    parser.add_argument("--embed-dim", type=int, default=None, help="override D")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--shift", type=int, default=3, help="max random translation, px")
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long"
    )


def run(args: argparse.Namespace) -> int:
    from tessera.clip.eval import embed_images, retrieval_metrics
    from tessera.data import load_dataset

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    out = Path(args.out)
    if has_checkpoint(out) and not args.resume:
        print(f"{out} already holds a checkpoint: pass --resume or choose another --out")
        return 2

    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    heldout = load_dataset(args.dataset, "heldout", data_dir=args.data_dir)
    texts, per_image = caption_table(train.captions)
    # Images with the same canonical caption are one concept to the text (shapes jitter).
    _, canon = caption_table([caps[:1] for caps in train.captions])
    concept = torch.tensor([c[0] for c in canon])
    ho_texts, ho_ids = caption_table([caps[:1] for caps in heldout.captions])
    cache = text_cache_dir(args.data_dir)
    pooled = encode_captions(texts, cache)["pooled"].to(device)  # (M,384)
    ho_pooled = encode_captions(ho_texts, cache)["pooled"].to(device)
    ho_ids = torch.tensor([i[0] for i in ho_ids])
    images = torch.from_numpy(np.ascontiguousarray(train.images))  # (N,64,64,3) uint8
    ho_images = torch.from_numpy(np.ascontiguousarray(heldout.images))

    if args.resume and has_checkpoint(out):
        model = load_component(out, device=device).train()
        config = model.config
    else:
        config = {
            "default": CLIPConfig(),
            "small": CLIPConfig(channels=[32, 64, 128]),  # ~4x cheaper: short CPU runs
            "tiny": CLIPConfig.tiny(),
        }[args.preset]
        if args.embed_dim:
            config.embed_dim = args.embed_dim
        model = CLIPModel(config).to(device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    step, history = 0, []
    if args.resume and has_checkpoint(out):
        step, history = load_train_state(out, optimizer)
        print(f"resuming {out} at step {step}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"CLIP {n_params / 1e6:.2f}M params, {len(images)} train images, {len(texts)} captions")

    rng = np.random.default_rng(args.seed + step)
    gen = torch.Generator().manual_seed(args.seed + step)
    extra = {"dataset": args.dataset, "train_images": len(images)}

    def checkpoint() -> None:
        save_component(out, model, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(out / "loss.png", history, ["loss", "logit_scale_exp", "heldout_r5"], "CLIP")

    order = rng.permutation(len(images))
    cursor = 0
    bar = tqdm(total=args.steps, initial=step, desc="train clip", unit="step")
    t0, start = time.time(), step
    while step < args.steps:
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            bar.write(f"time limit reached at step {step}")
            checkpoint()
            break
        if cursor + args.batch_size > len(order):
            order, cursor = rng.permutation(len(images)), 0
        idx = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        cap = sample_captions(per_image, idx, rng)
        x = random_translate(to_float(images[idx]), args.shift, gen).to(device)
        cap = torch.from_numpy(cap).to(device)
        groups = concept[torch.from_numpy(idx)].to(device)
        plan = planned_steps(step - start, args.steps - start, time.time() - t0, args.max_minutes)
        plan += start
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, plan, args.lr, min(args.warmup, plan // 10))
        model.train()
        loss = model(x, pooled[cap], groups=groups)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        model.clamp_logit_scale()
        step += 1
        scale = model.logit_scale.exp().item()
        history.append({"step": step, "loss": loss.item(), "logit_scale_exp": scale})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale:.1f}")
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                img = embed_images(model, ho_images, device)
                m = retrieval_metrics(img, model.embed_text(ho_pooled), ho_ids)
            history[-1]["heldout_r5"] = m["image_to_text"]["r@5"]
            bar.write(
                f"step {step}: held-out R@1 {m['image_to_text']['r@1']:.3f} "
                f"R@5 {m['image_to_text']['r@5']:.3f} ({len(ho_texts)} captions)"
            )
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint()
    bar.close()
    if not (out / "config.json").is_file():
        checkpoint()
    kind = read_config(out)["_class_name"]
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {out} ({kind})")
    return 0
