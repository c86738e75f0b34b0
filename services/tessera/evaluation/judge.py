"""The judge: a small CNN that names an image's Twemoji subgroup and group, for evaluation only.

It is trained on *all* Twemoji images (training and held-out concepts alike), so it can score
generations for held-out captions too; it never feeds back into a generator. Its penultimate
features are the space the bundle report's Fréchet distance is measured in.

    x (B,3,64,64) in [-1,1] -> 4 conv stages (/2 each) -> global mean pool -> features (B,F)
    features -> subgroup logits (B,S), group logits (B,G)

Training augments with shifts, blur and noise so that the judge reads tokenizer
reconstructions (softer than the source PNGs) as well as the originals.

``tessera train judge --out models/judge-twemoji``
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tessera.common.checkpoint import load_component, save_component
from tessera.common.images import arrays_to_tensor


@dataclass
class JudgeConfig:
    image_size: int = 64
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 192])  # /2 per stage
    feature_dim: int = 192  # F: pooled width, the Fréchet space
    n_subgroups: int = 102
    n_groups: int = 10
    subgroup_names: list[str] = field(default_factory=list)
    group_names: list[str] = field(default_factory=list)
    dropout: float = 0.2


class ConvStage(nn.Module):
    """conv3x3 stride 2 -> GN -> SiLU -> conv3x3 -> GN -> SiLU: (B,Cin,H,W) -> (B,C,H/2,W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=2, padding=1),
            nn.GroupNorm(8, c_out),
            nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1),
            nn.GroupNorm(8, c_out),
            nn.SiLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Judge(nn.Module):
    config_class = JudgeConfig

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        widths = [3, *config.channels]
        self.stages = nn.Sequential(
            *[ConvStage(a, b) for a, b in zip(widths, widths[1:], strict=False)]
        )
        self.to_features = nn.Linear(config.channels[-1], config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.subgroup_head = nn.Linear(config.feature_dim, config.n_subgroups)
        self.group_head = nn.Linear(config.feature_dim, config.n_groups)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B,3,S,S) in [-1,1] -> (B,F)."""
        h = self.stages(x).mean(dim=(2, 3))  # (B,C)
        return F.silu(self.to_features(h))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> subgroup logits (B,S), group logits (B,G), features (B,F)."""
        feats = self.features(x)
        h = self.dropout(feats)
        return self.subgroup_head(h), self.group_head(h), feats

    @torch.no_grad()
    def score(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """uint8 (N,S,S,3) -> {"subgroup": (N,) ids, "group": (N,) ids, "features": (N,F)}."""
        self.eval()
        subgroups, groups, feats = [], [], []
        for i in range(0, len(images), batch_size):
            x = arrays_to_tensor(images[i : i + batch_size])
            s, g, f = self(x)
            subgroups.append(s.argmax(-1))
            groups.append(g.argmax(-1))
            feats.append(f)
        return {
            "subgroup": torch.cat(subgroups).numpy(),
            "group": torch.cat(groups).numpy(),
            "features": torch.cat(feats).double().numpy(),
        }


def load_judge(directory: Path) -> Judge:
    model = load_component(directory)
    if not isinstance(model, Judge):
        raise ValueError(f"{directory} holds a {type(model).__name__}, not a judge")
    return model


# ---------------------------------------------------------------------------- training


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts (±4 px, white fill), Gaussian blur (σ up to 1.2) and noise, per image."""
    b = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4), value=1.0)
    dx, dy = torch.randint(0, 9, (2, b), generator=gen)
    x = torch.stack([padded[i, :, dy[i] : dy[i] + 64, dx[i] : dx[i] + 64] for i in range(b)])
    sigma = torch.rand(b, generator=gen) * 1.2
    taps = torch.arange(-2, 3, dtype=x.dtype)
    kernel = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    kernel = (kernel / kernel.sum(-1, keepdim=True)).repeat_interleave(3, dim=0)  # (B*3,5)
    # separable blur with one kernel per image: the batch folded into conv groups
    h = F.pad(x.reshape(1, b * 3, 64, 64), (2, 2, 2, 2), mode="replicate")
    h = F.conv2d(h, kernel.view(b * 3, 1, 1, 5), groups=b * 3)
    h = F.conv2d(h, kernel.view(b * 3, 1, 5, 1), groups=b * 3)
    x = h.view(b, 3, 64, 64)
    noise = torch.randn(x.shape, generator=gen) * 0.05 * torch.rand(b, 1, 1, 1, generator=gen)
    return (x + noise).clamp(-1, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="judge directory to write")
    parser.add_argument("--steps", type=int, default=2000)  # ~9 min on one core
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)


def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    ds = load_dataset("twemoji", "all", data_dir=args.data_dir)
    config = JudgeConfig(
        n_subgroups=len(ds.label_names["subgroup"]),
        n_groups=len(ds.label_names["group"]),
        subgroup_names=ds.label_names["subgroup"],
        group_names=ds.label_names["group"],
    )
    model = Judge(config)
    images = arrays_to_tensor(ds.images)  # (N,3,64,64)
    subgroup = torch.from_numpy(ds.labels["subgroup"])
    group = torch.from_numpy(ds.labels["group"])
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps)
    start, history = time.time(), []
    bar = tqdm(range(args.steps), desc="judge", mininterval=2.0)
    for step in bar:
        idx = torch.randint(0, len(images), (args.batch_size,), generator=gen)
        x = augment(images[idx], gen)
        s_logits, g_logits, _ = model.train()(x)
        loss = F.cross_entropy(s_logits, subgroup[idx]) + 0.5 * F.cross_entropy(
            g_logits, group[idx]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        acc = (s_logits.argmax(-1) == subgroup[idx]).float().mean().item()
        history.append({"step": step, "loss": loss.item(), "subgroup_acc": acc})
        bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        if args.max_minutes and time.time() - start > args.max_minutes * 60:
            break
    scored = model.score(ds.images)
    summary = {
        "steps": len(history),
        "wall_s": round(time.time() - start, 1),
        "subgroup_acc_all_images": float(np.mean(scored["subgroup"] == ds.labels["subgroup"])),
        "group_acc_all_images": float(np.mean(scored["group"] == ds.labels["group"])),
        "note": "trained on all Twemoji images: these accuracies are fit, not generalisation",
    }
    save_component(args.out, model, config, extra=summary)
    (args.out / "history.json").write_text(json.dumps(history) + "\n")
    print(json.dumps(summary, indent=1))
    return 0
