"""``tessera eval prior``: does the prior land nearer the true image embedding than the text
embedding does?

For every held-out image and its canonical caption: cosine(prior sample, true CLIP image
embedding) for a few guidance scales, beside the baseline cosine(CLIP text embedding, true
image embedding) — DALL·E 2's argument for having a prior at all. Also reported: retrieval of
the true image among the held-out images from the predicted embedding (R@1/R@5), against the
same retrieval from the text embedding. Writes ``eval_prior.json`` and ``cosine.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tessera.clip.eval import recall_at
from tessera.common.checkpoint import load_component
from tessera.common.errors import InvalidArgument
from tessera.common.text_encoder import TextBatch
from tessera.prior.train import precompute
from tessera.training.captions import text_cache_dir
from tessera.training.cli import add_dataset_arguments, add_runtime_arguments, start_command
from tessera.training.plots import pyplot
from tessera.training.reports import write_report


def image_recall(query: torch.Tensor, image_emb: torch.Tensor, caption_ids: torch.Tensor) -> dict:
    """query (N,D) one per image (image i's caption); a hit when a top-k image has the same
    canonical caption as image i (variants sharing a caption are indistinguishable)."""
    sim = query @ image_emb.t()
    correct = caption_ids[:, None] == caption_ids[None, :]
    return recall_at(sim, correct.to(sim.device), (1, 5))


def plot_cosines(path: Path, report: dict) -> None:
    plt = pyplot()

    rows = report["guidance"]
    labels = ["text emb"] + [f"prior g={r['guidance_scale']:g}" for r in rows]
    values = [report["text_baseline"]["cosine_mean"]] + [r["cosine_mean"] for r in rows]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.4))
    colors = ["grey"] + ["tab:blue"] * len(rows)
    ax.bar(range(len(labels)), values, color=colors)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("cosine to true image embedding")
    ax.set_title(f"prior on {report['dataset']}/{report['split']} ({report['n']} captions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prior", type=Path, required=True, help="prior checkpoint directory")
    parser.add_argument("--clip", type=Path, default=None, help="default: the prior's CLIP")
    add_dataset_arguments(parser, split=True)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps; default: config")
    parser.add_argument("--n-candidates", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default: PRIOR/eval")
    add_runtime_arguments(parser, threads=1, training=False)


@torch.no_grad()
def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    device = start_command(args)
    prior = load_component(args.prior, device=device)
    clip_dir = args.clip
    if clip_dir is None:
        meta = json.loads((Path(args.prior) / "config.json").read_text())
        clip_dir = Path(meta.get("_extra", {}).get("clip", ""))
    clip = load_component(clip_dir, device=device)
    if clip.embed_dim != prior.config.embed_dim:
        raise InvalidArgument(f"CLIP D={clip.embed_dim} but prior D={prior.config.embed_dim}")
    out = Path(args.out or Path(args.prior) / "eval")
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset, args.split, data_dir=args.data_dir)
    pre = precompute(clip, data, text_cache_dir(args.data_dir), device)

    cap = np.array([ids[0] for ids in pre["per_image"]])  # canonical caption of each image
    text = TextBatch(pre["states"][cap].float(), pre["mask"][cap], pre["pooled"][cap]).to(device)
    temb = pre["text_emb"][cap].to(device)
    true = pre["image_emb"].to(device)
    ids = torch.as_tensor(cap, device=device)
    seeds = list(range(len(cap)))

    def summary(pred: torch.Tensor) -> dict:
        cos = (pred * true).sum(-1)
        return {
            "cosine_mean": float(cos.mean()),
            "cosine_std": float(cos.std()),
            **{f"image_{k}": v for k, v in image_recall(pred, true, ids).items()},
        }

    report: dict = {
        "dataset": args.dataset,
        "split": args.split,
        "n": len(cap),
        "prior": str(args.prior),
        "clip": str(clip_dir),
        "steps": args.steps or prior.config.sample_steps,
        "n_candidates": args.n_candidates,
        "text_baseline": summary(temb),
        "guidance": [],
    }
    for g in args.guidance:
        pred = prior.sample(
            text,
            temb,
            seeds=seeds,
            guidance_scale=g,
            steps=args.steps,
            n_candidates=args.n_candidates,
        )
        report["guidance"].append({"guidance_scale": g, **summary(pred)})
    best = max(report["guidance"], key=lambda r: r["cosine_mean"])
    report["best_guidance_scale"] = best["guidance_scale"]
    report["prior_beats_baseline"] = best["cosine_mean"] > report["text_baseline"]["cosine_mean"]

    write_report(out / "eval_prior.json", report)
    plot_cosines(out / "cosine.png", report)
    b = report["text_baseline"]
    print(f"{args.dataset}/{args.split}: {len(cap)} captions")
    print(
        f"text-embedding baseline: cosine {b['cosine_mean']:.3f}  "
        f"image R@1 {b['image_r@1']:.3f} R@5 {b['image_r@5']:.3f}"
    )
    for r in report["guidance"]:
        print(
            f"prior g={r['guidance_scale']:g}: cosine {r['cosine_mean']:.3f}  "
            f"image R@1 {r['image_r@1']:.3f} R@5 {r['image_r@5']:.3f}"
        )
    print(f"wrote {out / 'eval_prior.json'} and {out / 'cosine.png'}")
    return 0
