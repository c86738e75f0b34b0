"""``tessera train prior``: the diffusion prior against a trained CLIP.

Everything the prior reads is precomputed once: CLIP image embeddings of the training images
(no augmentation: the prior should land on the embedding of the clean image), and the MiniLM
token states, masks and pooled embeddings of every caption, plus their CLIP text embeddings.
A step draws images, one random caption each, and minimises the x0 MSE with condition
dropout. ``OUT`` is a component directory like the CLIP's, with ``loss.png`` beside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tessera.clip.eval import embed_images
from tessera.common.checkpoint import load_component, save_component
from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.prior.model import DiffusionPrior, PriorConfig
from tessera.training import captions
from tessera.training.cli import (
    add_run_arguments,
    add_training_arguments,
    start_model,
    training_run,
)
from tessera.training.loop import Steps, due
from tessera.training.optim import optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.state import save_train_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, steps=5000, inputs={"--clip": "trained CLIP directory"})
    parser.add_argument("--preset", choices=["default", "small", "tiny"], default="default")
    add_training_arguments(
        parser, batch_size=128, lr=3e-4, weight_decay=0.01, warmup=200, every=500, threads=1
    )


def precompute(clip: torch.nn.Module, data: object, cache: Path, device: torch.device) -> dict:
    """CLIP image embeddings (N,D); caption states/mask/pooled and CLIP text embeddings (M,..);
    per-image caption ids."""
    texts, per_image = captions.caption_table(data.captions)
    enc = captions.encode_captions(texts, cache, states=True)
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


def build_prior(preset: str, image_emb: torch.Tensor, device: torch.device) -> DiffusionPrior:
    """A fresh prior of ``preset`` size for CLIP embeddings like ``image_emb`` (N,D), with
    its embedding statistics measured on them."""
    d = image_emb.shape[1]
    config = {
        "default": PriorConfig(embed_dim=d),
        "small": PriorConfig(embed_dim=d, n_layer=4, n_head=4, n_embd=192),  # short CPU runs
        "tiny": PriorConfig.tiny(embed_dim=d),
    }[preset]
    prior = DiffusionPrior(config).to(device)
    prior.set_embedding_stats(image_emb.to(device))
    return prior


@training_run
def run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from tessera.data import load_dataset

    clip = load_component(args.clip, device=device)
    cache = captions.text_cache_dir(args.data_dir)
    train = precompute(
        clip, load_dataset(args.dataset, "train", data_dir=args.data_dir), cache, device
    )
    heldout = precompute(
        clip, load_dataset(args.dataset, "heldout", data_dir=args.data_dir), cache, device
    )

    prior, optimizer, step, history = start_model(
        args, out, lambda: build_prior(args.preset, train["image_emb"], device), device
    )
    config = prior.config
    if config.embed_dim != clip.embed_dim:
        raise InvalidArgument(f"prior D={config.embed_dim} but CLIP D={clip.embed_dim}")
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

    loop = Steps(step, args.steps, args.max_minutes, "train prior")
    bar, clock = loop.bar, loop.clock
    while loop.running(step):
        idx = rng.integers(0, n_img, args.batch_size)
        cap = torch.from_numpy(captions.sample_captions(train["per_image"], idx, rng)).to(device)
        set_lr(optimizer, clock.lr(step, args.lr, args.warmup))
        prior.train()
        t = int(mask[cap].sum(1).max())  # trim padding shared by the whole batch
        loss = prior.loss(
            image_emb[torch.from_numpy(idx).to(device)],
            states[cap, :t].float(),
            mask[cap, :t],
            text_emb[cap],
            generator=gen,
        )
        optimizer_step(prior, optimizer, loss)
        step += 1
        history.append({"step": step, "loss": loss.item()})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if due(step, args.eval_every, args.steps):
            prior.eval()
            m = heldout_cosine(prior, heldout, device, steps=config.sample_steps)
            history[-1].update(m)
            bar.write(
                f"step {step}: held-out cosine prior {m['prior_cosine']:.3f} "
                f"vs text baseline {m['text_baseline_cosine']:.3f}"
            )
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    loop.finish(out, checkpoint)
    print(f"done: {step} steps in {clock.elapsed():.0f}s -> {out}")
    return 0
