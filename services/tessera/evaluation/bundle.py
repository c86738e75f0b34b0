"""``tessera eval bundle``: one report on everything a bundle does, written beside its weights.

Writes ``<bundle>/REPORT.md``, ``report.json`` and PNGs under ``<bundle>/eval/``:

- each component's own evaluation (tokenizer PSNR/SSIM/usage, CLIP retrieval, prior cosine
  vs the text-embedding baseline, decoder DDIM vs DDPM), run through its ``tessera eval``
  command into ``eval/<component>/``;
- for each route (``ar``, ``unclip``), generations through the same route code the gateway
  serves (``local_pipelines``) for training captions and for held-out captions:
  - Twemoji: the judge's subgroup (and group) accuracy, a Fréchet distance in the judge's
    feature space beside the real-vs-real floor at the same sample size, and the same judge
    on tokenizer reconstructions of the prompts' images (the ceiling a generator can reach);
  - shapes: the exact checker's verdict on every generation;
- a sample grid per route for a fixed prompt list, paraphrases not in the data included.

``report.json`` also keeps a small fixed set of prompts and floors: the fast subset that
``tests/evaluation`` re-runs in ``make test`` on the committed bundle, without the data set.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np
import torch

from tessera.common.checkpoint import read_bundle_index
from tessera.common.images import decode_image, labelled, make_grid
from tessera.common.settings import REPO_ROOT, get_settings
from tessera.evaluation.frechet import frechet_distance, real_floor
from tessera.evaluation.report import render_markdown
from tessera.routes.pipelines import DEFAULT_AR_CANDIDATES
from tessera.training.reports import write_report

ROUTES = ("ar", "unclip")
# What is evaluated: label -> (route, request overrides). The last row shows what the ar
# route's CLIP reranking buys: one candidate is plain sampling.
VARIANTS: dict[str, tuple[str, dict]] = {
    "ar": ("ar", {}),
    "unclip": ("unclip", {}),
    "ar, 1 candidate": ("ar", {"candidates": 1}),
}
DEFAULT_JUDGE = REPO_ROOT / "models" / "judge-twemoji"
GRID_PROMPTS = {
    "twemoji": [
        "grinning face",
        "red heart",
        "dog face",
        "rocket",
        "sun",
        "flag: Japan",
        "a happy face",  # paraphrases: not captions in the data
        "a small red fruit",
        "a green tree",
        "a sad face",
    ],
    "shapes": [
        "a small red circle at the top left",
        "a large blue square in the center",
        "a large green triangle at the bottom right",
        "a small yellow star in the center",
        "a big purple circle in the middle",  # paraphrase wording
        "a tiny orange square at the top right",
    ],
}
GRID_SEEDS = 4
FAST_PROMPTS = 24  # per route in the make-test subset
CONCURRENCY = 16  # requests in flight while evaluating
# The mixed section's edits per kind and split: 100 puts a 95% interval of about +-4 points
# on a shapes split's 600 edits (33 a kind left +-7 on 198, wider than the gains measured)
EDITS_PER_KIND = 100


# ---------------------------------------------------------------------------- generation


def generate(
    pipelines: object,
    route: str,
    prompts: list[str],
    seed: int = 0,
    seeds: list[int] | None = None,
    overrides: dict | None = None,
) -> np.ndarray:
    """One image per prompt through the served route code -> uint8 (N,S,S,3); prompt i uses
    ``seeds[i]`` (default ``seed + i``)."""
    seeds = seeds if seeds is not None else [seed + i for i in range(len(prompts))]
    from tessera.routes.schemas import GenerationParams

    async def go() -> list[np.ndarray]:
        # concurrent requests: the LM and decoder engines batch them, as a replica would
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int, prompt: str) -> np.ndarray:
            async with gate:
                params = GenerationParams(
                    prompt=prompt, route=route, seed=seeds[i], n=1, **(overrides or {})
                )
                res = await pipelines.generate(params)
            return decode_image(res.images[0].png, res.images[0].width, resize=False)

        return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))

    return np.stack(asyncio.run(go()))


def checks(image: np.ndarray, prompt: str) -> bool:
    """Whether the exact shapes checker reads ``image`` back as ``prompt``'s attributes."""
    from tessera.data.shapes import check_image, parse_caption

    return check_image(image) == parse_caption(prompt)


def shapes_verdicts(images: np.ndarray, prompts: list[str]) -> dict:
    from tessera.data.shapes import clean_share

    hits = [checks(img, p) for img, p in zip(images, prompts, strict=True)]
    return {"checker_acc": float(np.mean(hits)), "clean_single_shape": clean_share(images)}


def pick_rows(n_total: int, n: int) -> np.ndarray:
    """``n`` evenly spaced rows: fixed across runs, spread over the concepts."""
    return np.unique(np.linspace(0, n_total - 1, num=min(n, n_total)).round().astype(int))


def distinct_caption_rows(ds: object, n: int) -> np.ndarray:
    """Rows with distinct canonical captions (skin tones and jitters collapse), evenly spaced."""
    first: dict[str, int] = {}
    for row, caps in enumerate(ds.captions):
        first.setdefault(caps[0], row)
    rows = np.array(sorted(first.values()))
    return rows[pick_rows(len(rows), n)]


# ---------------------------------------------------------------------------- the report


def evaluate_routes(
    bundle: Path, dataset: str, judge_dir: Path | None, per_split: int, data_dir: Path | None
) -> tuple[dict, dict]:
    """Per route and split: generation metrics; also the fast-subset prompts and floors."""
    from tessera.common.checkpoint import load_bundle_component
    from tessera.common.images import arrays_to_tensor, tensor_to_arrays
    from tessera.data import load_dataset
    from tessera.evaluation.judge import load_judge
    from tessera.routes.local import local_pipelines

    pipelines = local_pipelines(bundle)
    tokenizer = load_bundle_component(bundle, "tokenizer")
    judge = load_judge(judge_dir) if dataset == "twemoji" else None
    rng = np.random.default_rng(0)
    results: dict = {}
    fast: dict = {"prompts": {}, "measured": {}, "seed": 0}
    for split in ("train", "heldout"):
        ds = load_dataset(dataset, split, data_dir=data_dir)
        rows = distinct_caption_rows(ds, per_split)
        prompts = [ds.captions[r][0] for r in rows]
        with torch.no_grad():
            latents = tokenizer.encode_latents(arrays_to_tensor(ds.images[rows]))  # any kind
            recon = tensor_to_arrays(tokenizer.decode_latents(latents, quantize=False))
        entry: dict = {"prompts": len(prompts)}
        if judge is not None:
            truth = ds.labels["subgroup"][rows]
            real = judge.score(ds.images)
            entry["judge_on_real"] = float(np.mean(real["subgroup"][rows] == truth))
            entry["judge_on_reconstructions"] = float(
                np.mean(judge.score(recon)["subgroup"] == truth)
            )
            entry["frechet_floor_real_vs_real"] = real_floor(real["features"], len(rows), rng)
        else:
            entry["checker_on_reconstructions"] = shapes_verdicts(recon, prompts)["checker_acc"]
        for label, (route, overrides) in VARIANTS.items():
            t0 = time.perf_counter()
            images = generate(pipelines, route, prompts, overrides=overrides)
            seconds = time.perf_counter() - t0
            r: dict = {"seconds_per_image": round(seconds / len(prompts), 3)}
            if judge is not None:
                scored = judge.score(images)
                hits = scored["subgroup"] == truth
                r["judge_subgroup_acc"] = float(np.mean(hits))
                group_truth = ds.labels["group"][rows]
                r["judge_group_acc"] = float(np.mean(scored["group"] == group_truth))
                pool = real["features"][rng.permutation(len(ds))[: len(rows)]]
                r["frechet"] = frechet_distance(scored["features"], pool)
            else:
                r.update(shapes_verdicts(images, prompts))
                hits = (
                    np.array(
                        [
                            shapes_verdicts(images[i : i + 1], prompts[i : i + 1])["checker_acc"]
                            for i in range(len(prompts))
                        ]
                    )
                    > 0
                )
            entry[label] = r
            print(f"{split} {label}: {json.dumps(r)}", flush=True)
            if split == "train" and label in ROUTES:
                fast_rows = pick_rows(len(prompts), FAST_PROMPTS)
                fast["prompts"][route] = [
                    {
                        "prompt": prompts[i],
                        "seed": int(i),
                        **({"subgroup": int(truth[i])} if judge is not None else {}),
                    }
                    for i in fast_rows
                ]
                fast["measured"][route] = float(np.mean(hits[fast_rows]))
        results[split] = entry
    fast["metric"] = "judge_subgroup_acc" if judge is not None else "checker_acc"
    return results, fast


def sample_grid(bundle: Path, dataset: str, out: Path) -> dict[str, str]:
    """Per route: a labelled PNG, one row per fixed prompt, GRID_SEEDS seeds each."""
    from tessera.routes.local import local_pipelines

    pipelines = local_pipelines(bundle)
    paths = {}
    for route in ROUTES:
        rows = []
        for prompt in GRID_PROMPTS[dataset]:
            images = generate(pipelines, route, [prompt] * GRID_SEEDS, seed=1000)
            rows.append(images)
        grid = make_grid([img for row in rows for img in row], columns=GRID_SEEDS)
        paths[route] = str(labelled(grid, GRID_PROMPTS[dataset], out / f"grid_{route}.png"))
    return paths


def component_evals(bundle: Path, dataset: str, out: Path, data_dir: Path | None) -> dict:
    """Each component's own ``tessera eval`` command, into ``out/<component>``; key numbers."""
    import importlib

    base = ["--dataset", dataset] + (["--data-dir", str(data_dir)] if data_dir else [])
    commands = {
        "tokenizer": ("tessera.tokenizer.eval", ["--checkpoint", str(bundle / "tokenizer")]),
        "lm": (
            "tessera.lm.eval",
            ["--checkpoint", str(bundle / "lm"), "--tokenizer", str(bundle / "tokenizer")]
            + ["--threads", "1"],
        ),
        "clip": ("tessera.clip.eval", ["--clip", str(bundle / "clip")]),
        "prior": (
            "tessera.prior.eval",
            ["--prior", str(bundle / "prior"), "--clip", str(bundle / "clip")],
        ),
        "decoder": (
            "tessera.decoder.eval",
            ["--decoder", str(bundle / "decoder"), "--tokenizer", str(bundle / "tokenizer")]
            + ["--clip", str(bundle / "clip"), "--threads", "1"],
        ),
    }
    if (bundle / "pixel").is_dir():  # the pixel route's own section (tessera.pixel.eval)
        commands["pixel"] = ("tessera.pixel.eval", ["--bundle", str(bundle)])
    for name, (module_name, argv) in commands.items():
        print(f"== tessera eval {name}", flush=True)
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"tessera eval {name}")
        module.add_arguments(parser)
        status = module.run(parser.parse_args(base + argv + ["--out", str(out / name)]))
        if status:
            raise RuntimeError(f"tessera eval {name} failed with status {status}")
    tok = json.loads((out / "tokenizer" / "metrics.json").read_text())["model"]
    clip = json.loads((out / "clip" / "eval_clip.json").read_text())
    prior = json.loads((out / "prior" / "eval_prior.json").read_text())
    decoder = json.loads((out / "decoder" / "decoder_eval.json").read_text())
    lm = json.loads((out / "lm" / "metrics.json").read_text())
    best = max(prior["guidance"], key=lambda g: g["cosine_mean"])
    return {
        "tokenizer": {
            k: tok[k]
            for k in ("psnr_db", "ssim", "usage_pct", "perplexity", "checker_accuracy")
            if k in tok
        },
        "lm": {
            "heldout_bits_per_token": lm["heldout_bits_per_token"],
            "train_bits_per_token": lm["train_bits_per_token"],
            "kv_cache_speedup": lm["kv_cache"].get("speedup"),
        },
        "clip": {
            "image_to_text": clip["retrieval"]["image_to_text"],
            "text_to_image": clip["retrieval"]["text_to_image"],
            "zero_shot": {k: v["top1"] for k, v in clip["zero_shot"].items()},
        },
        "prior": {
            "cosine": best["cosine_mean"],
            "guidance_scale": best["guidance_scale"],
            "text_embedding_baseline": prior["text_baseline"]["cosine_mean"],
            "beats_baseline": prior["prior_beats_baseline"],
        },
        "decoder": {
            split: {
                k: {m: v for m, v in d[k].items() if m != "scheduler"} for k in ("ddim", "ddpm")
            }
            | {"ddim_vs_ddpm": d["ddim_vs_ddpm"]}
            for split, d in decoder["splits"].items()
        },
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, default=None, help="default: the served bundle")
    parser.add_argument("--judge", type=Path, default=DEFAULT_JUDGE, help="Twemoji judge dir")
    parser.add_argument("--per-split", type=int, default=200, help="prompts per split")
    parser.add_argument(
        "--edits-per-kind", type=int, default=EDITS_PER_KIND,
        help="the mixed section's edits scored per edit kind and split",
    )  # fmt: skip
    parser.add_argument("--skip-components", action="store_true", help="routes and grids only")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: re-render REPORT.md from report.json with the current "
        "eval/pixel/metrics.json (after `tessera eval pixel`)",
    )
    parser.add_argument(
        "--only", choices=["mixed"], default=None,
        help="measure one section into the committed report.json and re-render REPORT.md "
        "(mixed: the mixed-modal model's edits, captions and text -> image; minutes, where "
        "the whole report takes much longer)",
    )  # fmt: skip


def render_only(bundle: Path) -> int:
    """REPORT.md again from the committed report.json, its pixel section replaced by
    ``eval/pixel/metrics.json`` (the pixel models are evaluated on their own)."""
    report = json.loads((bundle / "report.json").read_text())
    metrics = bundle / "eval" / "pixel" / "metrics.json"
    if metrics.is_file():
        report["pixel"] = json.loads(metrics.read_text())
    write_report(bundle / "report.json", report)
    (bundle / "REPORT.md").write_text(render_markdown(report))
    return 0


def run(args: argparse.Namespace) -> int:
    from tessera.bundle.train_all import git_commit

    torch.set_num_threads(args.threads)
    bundle = Path(args.bundle or get_settings().bundle_dir).resolve()
    if args.render_only:
        return render_only(bundle)
    index = read_bundle_index(bundle)
    dataset = index.get("training", {}).get("dataset") or index.get("name")
    if dataset not in GRID_PROMPTS:
        raise SystemExit(f"cannot tell the data set of {bundle} (index name {dataset!r})")
    out = bundle / "eval"
    start = time.time()
    if args.only == "mixed":
        from tessera.evaluation.mixed import mixed_section

        report = json.loads((bundle / "report.json").read_text())
        report["mixed"] = mixed_section(bundle, dataset, report, args, out)
        write_report(bundle / "report.json", report)
        (bundle / "REPORT.md").write_text(render_markdown(report))  # as render_only does
        return 0
    report: dict = {"bundle": index.get("name", bundle.name), "dataset": dataset}
    report["bundle_dir"] = str(bundle)
    report["ar_candidates"] = DEFAULT_AR_CANDIDATES
    report["variants"], report["grid_seeds"] = list(VARIANTS), GRID_SEEDS
    if not args.skip_components:
        report["components"] = component_evals(bundle, dataset, out, args.data_dir)
    routes, fast = evaluate_routes(bundle, dataset, args.judge, args.per_split, args.data_dir)
    report["routes"] = routes
    report["grids"] = sample_grid(bundle, dataset, out)
    report["fast_subset"] = fast
    if (bundle / "mixed").is_dir():
        from tessera.evaluation.mixed import mixed_section

        report["mixed"] = mixed_section(bundle, dataset, report, args, out)
    report["commit"] = git_commit()
    report["wall_s"] = round(time.time() - start, 1)
    if (out / "pixel" / "metrics.json").is_file():  # written by `tessera eval pixel`
        report["pixel"] = json.loads((out / "pixel" / "metrics.json").read_text())
    md = render_markdown(report)
    report["bundle_dir"] = "."  # the committed report names paths relative to the bundle
    report["grids"] = {k: str(Path(v).relative_to(bundle)) for k, v in report["grids"].items()}
    write_report(bundle / "report.json", report)
    (bundle / "REPORT.md").write_text(md)
    print(md)
    return 0
