"""``tessera eval pixel``: the pixel models beside their baseline, the ``pixel`` route under
the shapes checker, and the sequence-length table (pixel vs ar), measured in one run.

Writes ``OUT/metrics.json`` and ``OUT/REPORT.md`` (the bundle report's pixel section):

- held-out bits per sub-pixel (conditional and unconditional) of the Image Transformer and
  the PixelCNN, beside the empirical per-channel histogram of the training split;
- shapes: ``pixel`` route generations for training and held-out captions under the checker
  that reads the model's own size (``tessera.pixel.checker``), and upscaled to 64 px under
  the exact checker, each beside the real images shrunk to the model's size (the ceiling);
- the sequence-length table: ``tessera.pixel.costs``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tessera.common.checkpoint import load_component, read_config
from tessera.pixel.costs import cost_table, render_table
from tessera.pixel.data import bits_per_dim, histogram_bits, prepare_split, upscale
from tessera.training.cli import add_runtime_arguments, start_command
from tessera.training.components import component_dir
from tessera.training.reports import write_report

CHECKER_SIDE = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="bundle with pixel (+ lm)")
    parser.add_argument("--pixelcnn", type=Path, default=None, help="PixelCNN checkpoint")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=256, help="held-out images scored")
    parser.add_argument("--prompts", type=int, default=24, help="checker prompts per split")
    parser.add_argument(
        "--parts",
        default="likelihood,checker,costs",
        help="comma-separated parts to (re)measure; the others are kept from OUT/metrics.json",
    )
    add_runtime_arguments(parser, threads=2, training=False)


def checker_scores(bundle: Path, dataset: str, n: int, data_dir: Path | None) -> dict:
    """Per split: ``pixel`` route generations at the model's size under the checker that reads
    that size (``tessera.pixel.checker``), beside the real images shrunk to it (the ceiling);
    and both upscaled to 64 px under the exact checker, as measured before."""
    from tessera.data import load_dataset
    from tessera.evaluation.bundle import distinct_caption_rows, generate, shapes_verdicts
    from tessera.pixel import checker
    from tessera.pixel.data import shrink
    from tessera.routes.local import local_pipelines

    pipelines = local_pipelines(bundle)
    side = pipelines.info.native_size("pixel")
    scores: dict = {"model_side": side, "checked_at": CHECKER_SIDE}
    for split in ("train", "heldout"):
        ds = load_dataset(dataset, split, data_dir=data_dir)
        rows = distinct_caption_rows(ds, n)
        prompts = [ds.captions[r][0] for r in rows]
        images = generate(pipelines, "pixel", prompts)  # native size: no upscaling
        real = shrink(ds.images[rows], side)
        scores[split] = {
            "prompts": len(prompts),
            "pixel_route_at_model_size": checker.verdicts(images, prompts),
            "real_images_at_model_size_small_checker": checker.verdicts(real, prompts),
            "pixel_route": shapes_verdicts(upscale(images, CHECKER_SIDE), prompts),
            "real_images_at_model_size": shapes_verdicts(upscale(real, CHECKER_SIDE), prompts),
        }
        print(split, json.dumps(scores[split]), flush=True)
    return scores


def likelihoods(args: argparse.Namespace, device: torch.device) -> dict:
    bundle = Path(args.bundle)
    model = load_component(component_dir(bundle, "pixel"), device=device).eval()
    size = model.config.image_size
    train = prepare_split([args.dataset], "train", size, args.data_dir)
    heldout = prepare_split([args.dataset], "heldout", size, args.data_dir, canonical_only=True)
    out: dict = {
        "image_size": size,
        "heldout_images": min(args.limit, len(heldout.values)),
        "histogram_baseline": histogram_bits(train.values, heldout.values),
    }
    dirs = {"image_transformer": component_dir(bundle, "pixel")}
    models = {"image_transformer": model}
    if args.pixelcnn:
        dirs["pixelcnn"] = component_dir(args.pixelcnn, "pixelcnn")
        models["pixelcnn"] = load_component(dirs["pixelcnn"], device=device)
    for name, m in models.items():
        m.eval()
        out[name] = {
            "params": sum(p.numel() for p in m.parameters()),
            "steps": read_config(dirs[name]).get("_extra", {}).get("step"),
            "heldout_bpd": bits_per_dim(m, heldout, device, limit=args.limit),
            "heldout_bpd_unconditional": bits_per_dim(
                m, heldout, device, limit=args.limit, unconditional=True
            ),
            "train_bpd": bits_per_dim(m, train, device, limit=args.limit),
        }
        print(name, json.dumps(out[name]), flush=True)
    return out


def render(metrics: dict) -> str:
    lk = metrics["likelihood"]
    lines = [
        "## Pixel route (Image Transformer) and the sequence-length problem",
        "",
        f"Models at {lk['image_size']}x{lk['image_size']} ({3 * lk['image_size'] ** 2} "
        f"sub-pixel steps per image), {lk['heldout_images']} held-out images, bits per "
        "sub-pixel (lower is better):",
        "",
        "| model | params | steps trained | held-out bits/dim | unconditional | train bits/dim |",
        "|---|---|---|---|---|---|",
        f"| per-channel histogram (baseline) | 768 | - | {lk['histogram_baseline']:.3f} | "
        f"{lk['histogram_baseline']:.3f} | - |",
    ]
    for name in ("image_transformer", "pixelcnn"):
        if name in lk:
            m = lk[name]
            lines.append(
                f"| {name.replace('_', ' ')} | {m['params']:,} | {m.get('steps') or '-'} | "
                f"{m['heldout_bpd']:.3f} | "
                f"{m['heldout_bpd_unconditional']:.3f} | {m['train_bpd']:.3f} |"
            )
    lines += [
        "",
        f"Both trained by `tessera train pixel` on {metrics.get('dataset', 'shapes')} at "
        f"{lk['image_size']} px (commands and wall time: the bundle's `training.json`, keys "
        "`pixel` and `pixelcnn`): curves and samples in `eval/pixel/train_transformer/` and "
        "`eval/pixel/train_pixelcnn/` (`loss.png`, `samples_step_*.png`: the real image, then "
        "4 or 2 seeds per caption). Small models, trained on a shared 2-core CPU: see "
        "`docs/decisions/pixel-route.md`.",
    ]
    checker = metrics.get("checker")
    if checker and "pixel_route_at_model_size" in checker["train"]:
        side = checker["model_side"]
        lines += [
            "",
            f"Shapes checker on `pixel` route images, read at the model's {side} px by "
            "`tessera.pixel.checker` (nearest of the data set's renders shrunk to that size; "
            "clean = one shape, nothing else), per split. *Nearest* columns: how often the "
            "nearest render has the prompt's value, clean or not (chance 1/6, 1/4, 1/9, 1/2). "
            "The ceiling is the same checker on the real images at that size:",
            "",
            "| split | prompts | exact | clean single shape | nearest colour | nearest shape "
            "| nearest position | nearest size | ceiling: real images |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for split in ("train", "heldout"):
            s, ceiling = (
                checker[split]["pixel_route_at_model_size"],
                checker[split]["real_images_at_model_size_small_checker"],
            )
            lines.append(
                f"| {split} | {checker[split]['prompts']} | {s['checker_acc']:.3f} | "
                f"{s['clean_single_shape']:.3f} | {s['nearest_color_acc']:.3f} | "
                f"{s['nearest_shape_acc']:.3f} | {s['nearest_position_acc']:.3f} | "
                f"{s['nearest_size_acc']:.3f} | {ceiling['checker_acc']:.3f} |"
            )
    if checker:
        lines += [
            "",
            f"The exact 64 px checker on the same images upscaled from {checker['model_side']} "
            f"to {checker['checked_at']} px (it measures outlines, which {checker['model_side']} "
            "px blurs: its ceiling on real images is low):",
            "",
            "| split | prompts | checker acc | clean single shape | ceiling: real images "
            "at the model's size |",
            "|---|---|---|---|---|",
        ]
        for split in ("train", "heldout"):
            s = checker[split]
            lines.append(
                f"| {split} | {s['prompts']} | {s['pixel_route']['checker_acc']:.3f} | "
                f"{s['pixel_route']['clean_single_shape']:.3f} | "
                f"{s['real_images_at_model_size']['checker_acc']:.3f} |"
            )
    if "costs" in metrics:
        lines += ["", render_table(metrics["costs"])]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    device = start_command(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    path = out / "metrics.json"
    metrics: dict = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update({"bundle": str(args.bundle), "dataset": args.dataset})
    if "likelihood" in parts:
        metrics["likelihood"] = likelihoods(args, device)
    if "checker" in parts and args.dataset == "shapes":
        metrics["checker"] = checker_scores(args.bundle, args.dataset, args.prompts, args.data_dir)
    if "costs" in parts:
        metrics["costs"] = cost_table(Path(args.bundle), metrics.get("likelihood"))
    if "likelihood" in metrics and "costs" in metrics:
        it = metrics["likelihood"].get("image_transformer", {})
        for row in metrics["costs"]["rows"]:
            if row["route"] == "pixel" and row["measured"] and "heldout_bpd" in it:
                row["heldout_bpd"] = it["heldout_bpd"]
    write_report(path, metrics)
    if "likelihood" in metrics:
        (out / "REPORT.md").write_text(render(metrics))
        print(render(metrics))
    return 0
