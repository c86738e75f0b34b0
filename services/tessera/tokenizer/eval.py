"""``tessera eval tokenizer``: held-out reconstruction quality and codebook health.

Writes ``metrics.json`` (PSNR, SSIM, codebook usage %, code perplexity, sharpness ratio) and
``reconstructions.png`` (originals above reconstructions; with ``--compare``, a third row from
a second tokenizer, e.g. the VQ-VAE snapshot next to the VQ-GAN).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tessera.common.checkpoint import load_component
from tessera.common.images import arrays_to_tensor, make_grid, tensor_to_arrays
from tessera.data import load_dataset
from tessera.data.edit_sets import read_edit_set
from tessera.data.scenes import check_scene
from tessera.tokenizer.losses import code_statistics, gmsd, psnr, sharpness, ssim
from tessera.training.cli import add_dataset_arguments
from tessera.training.reports import write_report


def scene_read_rates(originals: np.ndarray, reconstructions: np.ndarray) -> dict[int, float]:
    """Shapes scenes: the share of reconstructions the checker reads back as the original's
    scene, by the original's shape count (unreadable originals are skipped)."""
    hits: dict[int, list[bool]] = {}
    for original, rec in zip(originals, reconstructions, strict=True):
        scene = check_scene(original)
        if scene is not None:
            hits.setdefault(len(scene), []).append(check_scene(rec) == scene)
    return {n: float(np.mean(v)) for n, v in sorted(hits.items())}


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: np.ndarray, batch_size: int = 64) -> dict:
    """Metrics of ``model`` on uint8 (N, S, S, 3) images; also returns the reconstructions
    (uint8) under ``"reconstructions"``."""
    was_training = model.training
    model.eval()
    psnrs, ssims, gmsds, sharp_rec, sharp_orig, codes, recons = [], [], [], [], [], [], []
    for i in range(0, len(images), batch_size):
        x = arrays_to_tensor(images[i : i + batch_size])
        out = model(x)
        x_hat = out.reconstruction.clamp(-1, 1)
        rec8 = tensor_to_arrays(x_hat)
        x_hat = arrays_to_tensor(rec8)  # score what a client receives: 8-bit pixels
        psnrs.append(psnr(x_hat, x))
        ssims.append(ssim(x_hat, x))
        gmsds.append(gmsd(x_hat, x))
        sharp_rec.append(sharpness(x_hat))
        sharp_orig.append(sharpness(x))
        if out.indices is not None:  # the kl kind has no codes
            codes.append(out.indices.flatten())
        recons.append(rec8)
    model.train(was_training)
    none = {"usage_pct": None, "perplexity": None, "codes_used": None}
    stats = code_statistics(torch.cat(codes), model.codebook_size) if codes else none
    return {
        "images": len(images),
        "psnr_db": float(torch.cat(psnrs).mean()),
        "ssim": float(torch.cat(ssims).mean()),
        "gmsd": float(torch.cat(gmsds).mean()),  # edge fidelity, lower is better
        "usage_pct": stats["usage_pct"],
        "perplexity": stats["perplexity"],
        "codes_used": stats["codes_used"],
        "codebook_size": model.codebook_size,
        "grid_size": model.grid_size,
        "kind": getattr(model, "kind", "vq"),
        # edge energy of reconstructions relative to the originals (1.0 = as sharp)
        "sharpness_ratio": float(torch.cat(sharp_rec).sum() / torch.cat(sharp_orig).sum()),
        "reconstructions": np.concatenate(recons),
    }


def shapes_checker_accuracy(images: np.ndarray, captions: list[list[str]]) -> float:
    """Share of images the exact shapes checker reads back as their caption's attributes."""
    from tessera.data.shapes import check_image, parse_caption

    hits = [
        check_image(img) == parse_caption(c[0]) for img, c in zip(images, captions, strict=True)
    ]
    return float(np.mean(hits))


@torch.no_grad()
def code_locality(
    model: torch.nn.Module, source: np.ndarray, target: np.ndarray, batch_size: int = 64
) -> dict[str, float]:
    """How local the codes are over edit pairs (uint8 (N, S, S, 3) each): the share of cells
    whose pixels the edit leaves untouched, and how many of those (and of the changed ones)
    keep their code from source to target. 1.0 for untouched cells means an editor can keep
    them as they are; a whole-image encoder recodes many of them."""
    was_training = model.training
    model.eval()
    codes = []
    for images in (source, target):
        codes.append(
            torch.cat(
                [model.encode(arrays_to_tensor(images[i : i + batch_size]))
                 for i in range(0, len(images), batch_size)]
            ).numpy()
        )  # fmt: skip
    model.train(was_training)
    g = model.grid_size
    p = source.shape[1] // g
    changed = (source != target).reshape(len(source), g, p, g, p, -1).any(axis=(2, 4, 5))
    same = codes[0] == codes[1]
    return {
        "untouched_cells": float((~changed).mean()),
        "untouched_keep_code": float(same[~changed].mean()) if (~changed).any() else 1.0,
        "changed_keep_code": float(same[changed].mean()) if changed.any() else 0.0,
    }


def edit_set_metrics(model: torch.nn.Module, name: str, split: str, data_dir: Path | None) -> dict:
    """Reconstruction PSNR on an edit set's sources and targets, the scene read rates and,
    for a tokenizer with codes, how local its codes are (``code_locality``)."""
    edits = read_edit_set(name, data_dir)
    rows = np.ones(len(edits), bool) if split == "all" else edits.heldout == (split == "heldout")
    images = np.concatenate([edits.source[rows], edits.target[rows]])
    m = evaluate(model, images)
    rates = scene_read_rates(images, m["reconstructions"]) if name == "edits-shapes" else {}
    out = {"images": len(images), "psnr_db": m["psnr_db"], "scene_read": rates}
    if getattr(model, "discrete", True):
        out["locality"] = code_locality(model, edits.source[rows], edits.target[rows])
    return out


def comparison_grid(rows: list[np.ndarray], columns: int = 16, scale: int = 2) -> np.ndarray:
    """Stack image rows (each (N, S, S, 3)) in bands of ``columns``: for each band, the
    originals' row on top, then each model's row below it."""
    tiles = []
    n = len(rows[0])
    for start in range(0, n, columns):
        for row in rows:
            tiles.extend(row[start : start + columns])
    grid = make_grid(tiles, columns=min(columns, n))
    if scale > 1:
        grid = np.asarray(
            Image.fromarray(grid).resize(
                (grid.shape[1] * scale, grid.shape[0] * scale), Image.Resampling.NEAREST
            )
        )
    return grid


def monitor(model: torch.nn.Module, images: np.ndarray, dataset: str, grid_png: Path) -> dict:
    """What training logs at each checkpoint: reconstruction and code statistics, and on shapes
    the scenes the checker reads back per shape count; the first 16 images beside their
    reconstructions go to ``grid_png``."""
    m = evaluate(model, images)
    recon = m.pop("reconstructions")
    Image.fromarray(comparison_grid([images[:16], recon[:16]], columns=16)).save(grid_png)
    keys = ("psnr_db", "ssim", "usage_pct", "perplexity", "sharpness_ratio")
    out = {k: m[k] for k in keys if m[k] is not None}  # kl: no codes, no usage
    if dataset == "shapes":
        rates = scene_read_rates(images, recon)
        out |= {f"read_{n}_shapes_pct": 100 * v for n, v in rates.items()}
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="tokenizer directory")
    add_dataset_arguments(parser, split=True, default="twemoji")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--compare", type=Path, default=None, help="a second tokenizer to show")
    parser.add_argument("--out", type=Path, default=None, help="default: CHECKPOINT/eval")
    parser.add_argument("--grid-images", type=int, default=48, help="images in the PNG")
    parser.add_argument(
        "--edit-set", default=None,
        help="also score an edit set's images of the split (sources and targets): PSNR and, "
        "for edits-shapes, the share the checker reads back as the same scene, by shape count",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset, args.split, args.data_dir)
    out_dir = args.out or args.checkpoint / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    models = {"model": args.checkpoint}
    if args.compare:
        models["compare"] = args.compare
    report: dict = {"dataset": args.dataset, "split": args.split}
    report["grid_rows"] = (
        ["original", "compare", "model"] if args.compare else ["original", "model"]
    )
    picks = np.linspace(0, len(ds) - 1, min(args.grid_images, len(ds))).astype(int)
    rows = [ds.images[picks]]
    for role, path in models.items():
        model = load_component(path)
        t0 = time.perf_counter()
        metrics = evaluate(model, ds.images)
        metrics["seconds"] = round(time.perf_counter() - t0, 2)
        metrics["checkpoint"] = str(path)
        recons = metrics.pop("reconstructions")
        if args.dataset == "shapes":  # the ceiling the tokenizer sets for generators
            metrics["checker_accuracy"] = shapes_checker_accuracy(recons, ds.captions)
        rows.append(recons[picks])
        if args.edit_set:
            metrics["edit_set"] = edit_set_metrics(model, args.edit_set, args.split, args.data_dir)
        report[role] = metrics
    if args.compare:  # the compared model goes in the middle row: original / compare / model
        rows = [rows[0], rows[2], rows[1]]
    Image.fromarray(comparison_grid(rows)).save(out_dir / "reconstructions.png")
    write_report(out_dir / "metrics.json", report)
    for role in models:
        m = report[role]
        print(
            f"{role} {m['checkpoint']}: {args.dataset}/{args.split} ({m['images']} images, "
            f"grid {m['grid_size']}x{m['grid_size']}): PSNR {m['psnr_db']:.2f} dB, "
            f"SSIM {m['ssim']:.4f}, GMSD {m['gmsd']:.4f}, "
            + (
                f"usage {m['usage_pct']:.1f}% ({m['codes_used']}/{m['codebook_size']}), "
                f"perplexity {m['perplexity']:.0f}, "
                if m["usage_pct"] is not None
                else f"{m['kind']} (continuous), "
            )
            + f"sharpness {m['sharpness_ratio']:.3f}"
            + (f", checker {m['checker_accuracy']:.1%}" if "checker_accuracy" in m else "")
        )
        if "edit_set" in m:
            e = m["edit_set"]
            reads = ", ".join(f"{n} shapes {v:.1%}" for n, v in e["scene_read"].items())
            loc = e.get("locality")
            print(
                f"  {args.edit_set} ({e['images']} images): PSNR {e['psnr_db']:.2f} dB; "
                f"read back: {reads}"
                + (
                    f"; cells the edit leaves untouched {loc['untouched_cells']:.1%}, of "
                    f"which keep their code {loc['untouched_keep_code']:.1%} (changed cells "
                    f"{loc['changed_keep_code']:.1%})"
                    if loc
                    else ""
                )
            )
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'reconstructions.png'}")
    return 0
