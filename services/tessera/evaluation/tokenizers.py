"""``tessera eval tokenizers``: tokenizers of any kind side by side, measured in one run.

For each ``--checkpoint NAME=DIR`` (a tokenizer component: vq, gumbel or kl), on the same
held-out images:

- reconstruction: PSNR, SSIM, sharpness ratio, GMSD; codebook usage and perplexity (discrete
  kinds only);
- in the judge's space (Twemoji, ``models/judge-twemoji``): the Fréchet distance of the
  reconstructions to the originals and the judge's subgroup accuracy on them (beside its
  accuracy on the originals); on shapes, the exact checker's read-back of the
  reconstructions (colour, shape, position and size all right, beside the originals');
- the bottleneck's own prior decoded (``VQModel.sample_prior``: uniform codes, or
  z ~ N(0, I) for kl) and its Fréchet distance to the real images: what each kind can
  generate with no learned prior over its latents (shapes: the share the checker reads as
  one clean shape);
- encode and decode throughput, images/s, on one batch in this process (same threads for all).

Writes ``metrics.json``, ``TABLE.md``, ``reconstructions.png`` (originals on top, one row per
tokenizer) and ``prior_samples.png`` (one row per tokenizer) under ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from tessera.common.checkpoint import load_component
from tessera.common.images import arrays_to_tensor, make_grid, tensor_to_arrays
from tessera.common.settings import REPO_ROOT
from tessera.evaluation.frechet import frechet_distance, real_floor
from tessera.training.cli import add_dataset_arguments
from tessera.training.reports import write_report

DEFAULT_JUDGE = REPO_ROOT / "models" / "judge-twemoji"
SPEED_BATCH = 64


@torch.no_grad()
def throughput(model: torch.nn.Module, images: np.ndarray, repeats: int = 3) -> dict[str, float]:
    """Encode (pixels -> codes or latents) and decode (-> pixels) images/s, best of ``repeats``."""
    x = arrays_to_tensor(images[:SPEED_BATCH])
    discrete = getattr(model, "discrete", True)
    encode = model.encode if discrete else model.encode_latents
    codes = encode(x)
    decode = model.decode_indices if discrete else model.decode_latents

    def best(fn: object, arg: torch.Tensor) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(arg)
            times.append(time.perf_counter() - t0)
        return round(len(x) / min(times), 1)

    return {"encode_images_per_s": best(encode, x), "decode_images_per_s": best(decode, codes)}


def parse_checkpoints(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--checkpoint takes NAME=DIR, got {spec!r}")
        out[name] = Path(path)
    return out


def compare(
    checkpoints: dict[str, Path], images: np.ndarray, labels: np.ndarray | None,
    judge: torch.nn.Module | None, grid_images: int = 16, prior_samples: int = 16, seed: int = 0,
    captions: list[list[str]] | None = None,
) -> tuple[dict, list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """Metrics per tokenizer; the reconstruction rows (originals first) and prior-sample rows.

    ``captions`` (shapes) adds the exact checker: its read-back of the reconstructions and the
    share of prior samples it reads as one clean shape."""
    from tessera.data.shapes import clean_share
    from tessera.tokenizer.eval import evaluate, shapes_checker_accuracy

    picks = np.linspace(0, len(images) - 1, min(grid_images, len(images))).astype(int)
    recon_rows, prior_rows = [images[picks]], []
    results: dict = {"images": len(images), "models": {}}
    real = judge.score(images) if judge is not None else None
    if real is not None:
        results["judge_on_originals"] = float(np.mean(real["subgroup"] == labels))
        n_prior = max(prior_samples, 2)
        rng = np.random.default_rng(seed)
        results["frechet_floor_real_vs_real"] = real_floor(real["features"], n_prior, rng)
    if captions is not None:
        results["checker_on_originals"] = shapes_checker_accuracy(images, captions)
    for name, path in checkpoints.items():
        model = load_component(path).eval()
        t0 = time.perf_counter()
        m = evaluate(model, images)
        recons = m.pop("reconstructions")
        m["eval_seconds"] = round(time.perf_counter() - t0, 2)
        m["checkpoint"] = str(path)
        extra = load_extra(path)
        m["train_steps"], m["train_minutes"] = extra.get("step"), extra.get("minutes")
        if real is not None:
            scored = judge.score(recons)
            m["judge_acc"] = float(np.mean(scored["subgroup"] == labels))
            m["frechet"] = frechet_distance(scored["features"], real["features"])
        gen = torch.Generator().manual_seed(seed)
        prior = tensor_to_arrays(model.sample_prior(max(prior_samples, 2), gen).clamp(-1, 1))
        if real is not None:
            m["prior_frechet"] = frechet_distance(judge.score(prior)["features"], real["features"])
        if captions is not None:
            m["checker_acc"] = shapes_checker_accuracy(recons, captions)
            m["prior_clean"] = clean_share(prior)
        m |= throughput(model, images)
        recon_rows.append(recons[picks])
        prior_rows.append(prior[:prior_samples])
        results["models"][name] = m
        print(f"{name}: {summary(m)}", flush=True)
    return results, recon_rows, prior_rows


def load_extra(path: Path) -> dict:
    """Steps and minutes the tokenizer trained for (its config's ``_extra`` and history)."""
    import json

    meta = json.loads((Path(path) / "config.json").read_text())
    extra = dict(meta.get("_extra", {}))
    history = Path(path) / "history.json"
    if history.is_file():
        rows = json.loads(history.read_text())
        if rows:
            extra["minutes"] = round(rows[-1].get("elapsed_s", 0) / 60, 1)
    return extra


def fmt(v: object, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summary(m: dict) -> str:
    return (
        f"{m['kind']}: PSNR {fmt(m['psnr_db'])} dB, SSIM {fmt(m['ssim'], 3)}, usage "
        f"{fmt(m['usage_pct'], 1)}%, FD {fmt(m.get('frechet'))}, judge {fmt(m.get('judge_acc'))}"
    )


def table(results: dict) -> str:
    """The comparison as a markdown table (the judge's columns on Twemoji, the checker's on
    shapes)."""
    checker = "checker_on_originals" in results
    space = (
        "| checker acc | prior clean % |" if checker else "| judge FD ↓ | judge acc | prior FD ↓ |"
    )
    head = (
        "| tokenizer | kind | steps (min) | PSNR dB | SSIM | sharpness | usage % | perplexity "
        f"{space} encode img/s | decode img/s |"
    )
    lines = [head, "|" + "---|" * (12 if checker else 13)]
    if checker:
        lines.append(
            f"| originals | – | – | – | – | 1.00 | – | – | {fmt(results['checker_on_originals'])} "
            "| – | – | – |"
        )
    elif "judge_on_originals" in results:
        floor = fmt(results["frechet_floor_real_vs_real"])
        lines.append(
            f"| originals | – | – | – | – | 1.00 | – | – | 0 | "
            f"{fmt(results['judge_on_originals'])} | {floor} (real vs real) | – | – |"
        )
    for name, m in results["models"].items():
        if checker:
            measured = f"{fmt(m.get('checker_acc'))} | {fmt(100 * m['prior_clean'], 1)} |"
        else:
            measured = (
                f"{fmt(m.get('frechet'))} | {fmt(m.get('judge_acc'))} | "
                f"{fmt(m.get('prior_frechet'))} |"
            )
        lines.append(
            f"| {name} | {m['kind']} | {fmt(m['train_steps'])} ({fmt(m['train_minutes'], 1)}) | "
            f"{fmt(m['psnr_db'])} | {fmt(m['ssim'], 3)} | {fmt(m['sharpness_ratio'])} | "
            f"{fmt(m['usage_pct'], 1)} | {fmt(m['perplexity'], 0)} | {measured} "
            f"{fmt(m['encode_images_per_s'], 0)} | {fmt(m['decode_images_per_s'], 0)} |"
        )
    space_note = (
        "checker acc: the exact shapes checker reads colour, shape, position and size of the "
        "reconstruction as the caption's; prior clean: decoded prior samples (uniform codes, or "
        "z ~ N(0, I) for kl) the checker reads as one clean shape on white"
        if checker
        else "judge FD: the reconstructions vs the same originals in the judge's feature space; "
        "prior FD: decoded prior samples (uniform codes, or z ~ N(0, I) for kl) vs the "
        "originals, beside two disjoint draws of real images of the same size"
    )
    notes = [
        "",
        f"{results['images']} {results.get('dataset', '')} {results.get('split', '')} images. "
        f"{space_note}; encode / decode on one batch of {SPEED_BATCH}, "
        f"{results.get('threads', 1)} thread(s), this process.",
    ]
    return "\n".join(lines + notes) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", action="append", required=True, metavar="NAME=DIR",
        help="a tokenizer component to compare (repeat)",
    )  # fmt: skip
    add_dataset_arguments(parser, split=True, default="twemoji")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE, help="Twemoji judge dir")
    parser.add_argument("--out", type=Path, required=True, help="directory for the results")
    parser.add_argument("--grid-images", type=int, default=16, help="images per grid row")
    parser.add_argument("--prior-samples", type=int, default=128, help="prior samples per model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def run(args: argparse.Namespace) -> int:
    from tessera.common.images import labelled
    from tessera.data import load_dataset
    from tessera.evaluation.judge import load_judge

    torch.set_num_threads(args.threads)
    checkpoints = parse_checkpoints(args.checkpoint)
    ds = load_dataset(args.dataset, args.split, args.data_dir)
    twemoji = args.dataset == "twemoji"
    judge = load_judge(args.judge) if twemoji and args.judge.is_dir() else None
    labels = ds.labels["subgroup"] if judge is not None else None
    t0 = time.time()
    captions = ds.captions if args.dataset == "shapes" else None
    results, recon_rows, prior_rows = compare(
        checkpoints, ds.images, labels, judge, args.grid_images, args.prior_samples,
        captions=captions,
    )  # fmt: skip
    results |= {"dataset": args.dataset, "split": args.split, "threads": args.threads}
    results["wall_s"] = round(time.time() - t0, 1)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    n = len(recon_rows[0])
    grid = make_grid([img for row in recon_rows for img in row], columns=n)
    labelled(grid, ["original", *checkpoints], out / "reconstructions.png")
    shown = min(n, len(prior_rows[0]))
    grid = make_grid([img for row in prior_rows for img in row[:shown]], columns=shown)
    labelled(grid, [f"{k} prior" for k in checkpoints], out / "prior_samples.png")
    write_report(out / "metrics.json", results)
    (out / "TABLE.md").write_text(table(results))
    print(table(results))
    print(f"wrote {out / 'metrics.json'}, TABLE.md, reconstructions.png, prior_samples.png")
    return 0
