"""``tessera train prior``: the diffusion prior against a trained CLIP.

Everything the prior reads is precomputed once: CLIP image embeddings of the training images
(no augmentation: the prior should land on the embedding of the clean image), and the MiniLM
token states, masks and pooled embeddings of every caption, plus their CLIP text embeddings.
A step draws images, one random caption each, and minimises the x0 MSE with condition
dropout. ``OUT`` is a component directory like the CLIP's, with ``loss.png`` beside it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tessera.common.checkpoint import load_component, save_component
from tessera.common.device import pick_device
from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.prior.model import DiffusionPrior, PriorConfig
from tessera.training.captions import (
    caption_table,
    encode_captions,
    sample_captions,
    text_cache_dir,
)
from tessera.training.optim import lr_at, make_optimizer, planned_steps
from tessera.training.plots import plot_curves
from tessera.training.state import has_checkpoint, load_train_state, save_train_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=["twemoji", "shapes"], required=True)
    parser.add_argument("--clip", type=Path, required=True, help="trained CLIP directory")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--preset", choices=["default", "small", "tiny"], default="default")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--ckpt-every", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long"
    )


def precompute(clip: torch.nn.Module, data: object, cache: Path, device: torch.device) -> dict:
    """CLIP image embeddings (N,D); caption states/mask/pooled and CLIP text embeddings (M,..);
    per-image caption ids."""
    from tessera.clip.eval import embed_images

    texts, per_image = caption_table(data.captions)
    enc = encode_captions(texts, cache, states=True)
    with torch.no_grad():
        images = torch.from_numpy(np.ascontiguousarray(data.images))
        image_emb = embed_images(clip, images, device).cpu()
        text_emb = clip.embed_text(enc["pooled"].to(device)).cpu()
    return {
        "texts": texts,
        "per_image": per_image,
        "image_emb": image_emb,
        "text_emb": text_emb,
        **enc,
    }


@torch.no_grad()
def heldout_cosine(
    prior: DiffusionPrior, pre: dict, device: torch.device, steps: int, limit: int = 128
) -> dict:
    """Mean cosine of prior samples (guidance from the config) to the true image embedding,
    canonical caption per image, beside the text-embedding baseline; on at most ``limit``
    evenly spaced images, so that monitoring stays cheap (``tessera eval prior`` does all)."""
    n = len(pre["per_image"])
    rows = np.linspace(0, n - 1, num=min(limit, n)).round().astype(int)
    cap = np.array([pre["per_image"][i][0] for i in rows])
    text = TextBatch(pre["states"][cap].float(), pre["mask"][cap], pre["pooled"][cap])
    temb = pre["text_emb"][cap].to(device)
    pred = prior.sample(text.to(device), temb, seeds=list(range(len(cap))), steps=steps)
    true = pre["image_emb"][rows].to(device)
    return {
        "prior_cosine": float((pred * true).sum(-1).mean()),
        "text_baseline_cosine": float((temb * true).sum(-1).mean()),
    }


def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    out = Path(args.out)
    if has_checkpoint(out) and not args.resume:
        print(f"{out} already holds a checkpoint: pass --resume or choose another --out")
        return 2
    clip = load_component(args.clip, device=device)
    cache = text_cache_dir(args.data_dir)
    train = precompute(
        clip, load_dataset(args.dataset, "train", data_dir=args.data_dir), cache, device
    )
    heldout = precompute(
        clip, load_dataset(args.dataset, "heldout", data_dir=args.data_dir), cache, device
    )

    if args.resume and has_checkpoint(out):
        prior = load_component(out, device=device).train()
        config = prior.config
        if config.embed_dim != clip.embed_dim:
            raise InvalidArgument(f"prior D={config.embed_dim} but CLIP D={clip.embed_dim}")
    else:
        d = clip.embed_dim
        config = {
            "default": PriorConfig(embed_dim=d),
            "small": PriorConfig(embed_dim=d, n_layer=4, n_head=4, n_embd=192),  # short CPU runs
            "tiny": PriorConfig.tiny(embed_dim=d),
        }[args.preset]
        prior = DiffusionPrior(config).to(device)
        prior.set_embedding_stats(train["image_emb"].to(device))
    optimizer = make_optimizer(prior, args.lr, args.weight_decay)
    step, history = 0, []
    if args.resume and has_checkpoint(out):
        step, history = load_train_state(out, optimizer)
        print(f"resuming {out} at step {step}")
    n_params = sum(p.numel() for p in prior.parameters())
    n_img, n_txt = len(train["image_emb"]), len(train["texts"])
    print(
        f"prior {n_params / 1e6:.2f}M params, {n_img} images, {n_txt} captions, "
        f"{train['states'].shape[1]} text tokens max"
    )

    # Keep the cached tensors on the training device; batches are gathered by index.
    states, mask = train["states"].to(device), train["mask"].to(device)
    text_emb, image_emb = train["text_emb"].to(device), train["image_emb"].to(device)
    rng = np.random.default_rng(args.seed + step)
    gen = torch.Generator(device=device).manual_seed(args.seed + step)
    extra = {"dataset": args.dataset, "clip": str(args.clip)}

    def checkpoint() -> None:
        save_component(out, prior, config, extra={**extra, "step": step})
        save_train_state(out, optimizer, step, history)
        plot_curves(
            out / "loss.png",
            history,
            ["loss", ("prior_cosine", "text_baseline_cosine")],
            "diffusion prior",
        )

    bar = tqdm(total=args.steps, initial=step, desc="train prior", unit="step")
    t0, start = time.time(), step
    while step < args.steps:
        if args.max_minutes and time.time() - t0 > 60 * args.max_minutes:
            bar.write(f"time limit reached at step {step}")
            checkpoint()
            break
        idx = rng.integers(0, n_img, args.batch_size)
        cap = torch.from_numpy(sample_captions(train["per_image"], idx, rng)).to(device)
        plan = planned_steps(step - start, args.steps - start, time.time() - t0, args.max_minutes)
        plan += start
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, plan, args.lr, min(args.warmup, plan // 10))
        prior.train()
        t = int(mask[cap].sum(1).max())  # trim padding shared by the whole batch
        loss = prior.loss(
            image_emb[torch.from_numpy(idx).to(device)],
            states[cap, :t].float(),
            mask[cap, :t],
            text_emb[cap],
            generator=gen,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        optimizer.step()
        step += 1
        history.append({"step": step, "loss": loss.item()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % args.eval_every == 0 or step == args.steps:
            prior.eval()
            m = heldout_cosine(prior, heldout, device, steps=config.sample_steps)
            history[-1].update(m)
            bar.write(
                f"step {step}: held-out cosine prior {m['prior_cosine']:.3f} "
                f"vs text baseline {m['text_baseline_cosine']:.3f}"
            )
        if step % args.ckpt_every == 0 or step == args.steps:
            checkpoint()
    bar.close()
    if not (out / "config.json").is_file():
        checkpoint()
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {out}")
    return 0
