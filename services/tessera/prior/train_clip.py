"""``tessera train clip``: contrastive training of the CLIP projection and image tower.

The frozen MiniLM runs once over every caption of the training split (cached under
``OUT/cache``); each step then draws a batch of images, one random caption per image, a small
random translation, and minimises the symmetric InfoNCE loss. ``OUT`` is itself a component
directory (``config.json`` + ``model.safetensors``) with ``train_state.json`` /
``optimizer.safetensors`` beside it for ``--resume`` and ``loss.png`` for people.

The caching, train-state and plotting helpers here are shared with ``tessera train prior``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tessera.common.checkpoint import load_component, read_config, save_component
from tessera.common.device import pick_device
from tessera.common.text_encoder import shared_text_encoder
from tessera.prior.clip import CLIPConfig, CLIPModel

STATE_JSON = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


# ---------------------------------------------------------------------------- captions


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


def sample_captions(
    per_image: list[list[int]], idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One random caption id for each image in ``idx``."""
    return np.array([per_image[i][rng.integers(len(per_image[i]))] for i in idx], dtype=np.int64)


# ---------------------------------------------------------------------------- images


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W,3) -> float (B,3,H,W) in [-1,1]."""
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def random_translate(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` px, filling with white. No flips: captions say
    "left"/"right" (shapes positions, arrows) and a mirror would make them lie."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4, value=1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=gen).tolist()
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]
    )


# ---------------------------------------------------------------------------- optimisation


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on biases, norms, scalars and embedding-like vectors."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def planned_steps(step: int, total: int, elapsed_s: float, max_minutes: float | None) -> int:
    """The step count the LR schedule should aim at: ``total``, or fewer when a time limit
    will stop the run first (extrapolated from the pace so far), so that a time-boxed run
    still warms up and decays instead of stopping at a high learning rate."""
    if not max_minutes or step < 5 or elapsed_s <= 0:
        return total
    return max(step + 1, min(total, int(step * 60 * max_minutes / elapsed_s)))


def save_train_state(out: Path, optimizer: torch.optim.Optimizer, step: int, history: list) -> None:
    """Optimizer tensors to safetensors, everything else to JSON (nothing is pickled)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    save_file(tensors, str(Path(out) / OPTIMIZER_FILE))
    groups = [{k: v for k, v in g.items()} for g in sd["param_groups"]]
    state = {"step": step, "history": history, "param_groups": groups, "scalars": scalars}
    (Path(out) / STATE_JSON).write_text(json.dumps(state) + "\n")


def load_train_state(out: Path, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    meta = json.loads((Path(out) / STATE_JSON).read_text())
    tensors = load_file(str(Path(out) / OPTIMIZER_FILE))
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), list(meta["history"])


def has_checkpoint(out: Path) -> bool:
    return (Path(out) / STATE_JSON).is_file() and (Path(out) / "config.json").is_file()


def plot_curves(
    path: Path, history: list[dict], panels: list[str | tuple[str, ...]], title: str
) -> None:
    """One panel per entry of ``panels``: a history key, or a tuple of keys drawn together
    (e.g. a metric beside its baseline). ``history`` is a list of {"step": .., key: ..}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(p,) if isinstance(p, str) else tuple(p) for p in panels]
    groups = [g for g in groups if any(k in h for h in history for k in g)]
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, keys in zip(axes[0], groups, strict=True):
        for key in keys:
            pts = [(h["step"], h[key]) for h in history if key in h]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, lw=1, label=key)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(" vs ".join(keys) if len(keys) < 3 else keys[0])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    from tessera.data import load_dataset
    from tessera.prior.eval_clip import embed_images, retrieval_metrics

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
