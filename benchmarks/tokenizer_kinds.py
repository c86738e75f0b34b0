"""The tokenizer family side by side (issue 20): VQ-GAN, VQ-VAE, dVAE, KL autoencoder, plain
VAE, each trained by ``tessera train tokenizer`` with the same trunk, data and budget (steps
and/or training minutes, whichever ends first), then measured in one run by
``tessera eval tokenizers``.

    python -m benchmarks.tokenizer_kinds [--steps 6000] [--max-minutes 25] [--dataset twemoji]
        [--jobs 2] [--downstream-steps 8000 --downstream-minutes 15]

``--jobs N`` trains N kinds at a time, each in its own process on ``--threads`` threads (on an
idle two-core machine, ``--jobs 2`` with one thread each gives every kind a core).

The ``vqvae`` row defaults to the VQ-GAN run's own snapshot at its GAN switch (65% of its
budget, ``OUT/vqvae``); ``--kinds ... vqvae`` trains a GAN-free VQ-VAE on the full budget.

``--downstream-steps N`` adds the downstream row (Twemoji): the ``unclip`` route with a
``vq`` (the vqgan run) and a ``kl`` tokenizer, each with its own diffusion decoder trained
for the same N steps or ``--downstream-minutes`` (the ``tessera train all`` recipe's small
decoder) and the committed bundle's CLIP and prior (neither depends on the tokenizer), judged
on the same prompts; the row is appended to ``TABLE.md``.

Weights go under ``runs/tokenizer-kinds/<dataset>/<name>`` (git-ignored); a finished run is
reused, an interrupted one resumed. Results: ``benchmarks/results/tokenizer_kinds/<dataset>/``
(``metrics.json``, ``TABLE.md``, ``reconstructions.png``, ``prior_samples.png``). Training is
sequential on one thread (``--threads``), so the minutes in the table compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tessera.bundle.train_all import WIDE_4K
from tessera.common.settings import REPO_ROOT

# name -> `tessera train tokenizer` arguments (besides --out, --steps, --dataset, --threads)
KINDS: dict[str, list[str]] = {
    "vqgan": ["--kind", "vq"],  # today's recipe: VQ-VAE, then the GAN phase (last 35%)
    "dvae": ["--kind", "gumbel"],  # DALL·E: relaxed one-hot, annealed tau, KL to uniform
    # the dVAE plus KL(the batch's code distribution || uniform): against its codebook collapse
    "dvae-usage": ["--kind", "gumbel", "--usage-weight", "1"],
    "kl": ["--kind", "kl"],  # KL autoencoder (latent diffusion's), KL weight 1e-3
    "vae": ["--kind", "vae"],  # plain VAE: KL weight 1
    "vqvae": ["--kind", "vq", "--no-gan"],  # VQ-VAE for the whole budget
    # more bits per cell at the same 8x8 grid (10 bits today): the rate the kl kind suggests
    "vqgan-4k": ["--kind", "vq", "--codebook-size", "4096"],  # 12 bits
    "fsq-15k": ["--kind", "vq", "--quantizer", "fsq", "--fsq-levels", "8,8,8,6,5"],  # 13.9 bits
    # 4,096 codes without the GAN phase (it bought < 0.1 dB of PSNR in the 12,000-step run),
    # at today's width and at 1.5x the width: the two roads to the 26 dB bar
    "vqvae-4k": ["--kind", "vq", "--codebook-size", "4096", "--no-gan"],
    "vqvae-4k-w48": ["--kind", "vq", *WIDE_4K],  # `tessera train all --tokenizer-recipe 4k-wide`
}
RUNS = REPO_ROOT / "runs" / "tokenizer-kinds"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "tokenizer_kinds"


def trained_steps(out: Path) -> int:
    state = out / "train_state" / "state.json"
    return int(json.loads(state.read_text())["step"]) if state.is_file() else 0


def is_trained(out: Path, steps: int, minutes: float | None) -> bool:
    """The run reached its step budget, or its minutes (a finished run is reused)."""
    state = out / "train_state" / "state.json"
    if not state.is_file():
        return False
    done = json.loads(state.read_text())
    return done["step"] >= steps or bool(minutes and done["elapsed_s"] >= 60 * minutes)


def train(
    name: str,
    out: Path,
    dataset: str,
    steps: int,
    threads: int,
    minutes: float | None,
    data_dir: Path | None = None,
    preset: str = "default",
) -> None:
    from tessera.tokenizer import train as tok_train

    if is_trained(out, steps, minutes):
        print(f"{name}: {out} is trained", flush=True)
        return
    argv = ["--dataset", dataset, "--out", str(out), "--steps", str(steps)]
    argv += ["--threads", str(threads), "--no-progress", "--resume", *KINDS[name]]
    if minutes:
        argv += ["--max-minutes", str(minutes)]
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    if preset != "default":  # the tests' tiny trunk
        argv += ["--preset", preset]
    if dataset == "shapes":  # the shapes recipe's codebook (bundle/train_all.py)
        argv += ["--codebook-size", "256"]
    parser = argparse.ArgumentParser(prog="tessera train tokenizer")
    tok_train.add_arguments(parser)
    print(f"== tessera train tokenizer {' '.join(argv)}", flush=True)
    if tok_train.run(parser.parse_args(argv)):
        raise SystemExit(f"training {name} failed")


def run_logged(commands: dict[str, tuple[list[str], Path]], jobs: int) -> None:
    """Run ``{name: (argv, log)}`` as processes, ``jobs`` at a time, each writing its log;
    raise naming the ones that failed."""

    def one(name: str) -> int:
        argv, log = commands[name]
        print(f"== {name}: {' '.join(argv[1:])} (log: {log})", flush=True)
        with open(log, "w") as out:
            code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        print(f"== {name}: {'done' if code == 0 else f'failed ({code})'}", flush=True)
        return code

    names = list(commands)
    with ThreadPoolExecutor(max(jobs, 1)) as pool:
        failed = [n for n, code in zip(names, pool.map(one, names), strict=True) if code]
    if failed:
        raise SystemExit(f"failed: {failed}")


def train_in_parallel(args: argparse.Namespace) -> None:
    """Each kind in its own ``--train-only`` process, ``args.jobs`` at a time; logs beside
    the runs (``<runs>/<name>.log``)."""
    runs = args.runs / args.dataset
    runs.mkdir(parents=True, exist_ok=True)
    commands = {}
    for name in args.kinds:
        argv = [sys.executable, "-m", "benchmarks.tokenizer_kinds", "--train-only", "--kinds",
                name, "--dataset", args.dataset, "--steps", str(args.steps), "--threads",
                str(args.threads), "--runs", str(args.runs), "--preset", args.preset]  # fmt: skip
        if args.max_minutes:
            argv += ["--max-minutes", str(args.max_minutes)]
        if args.data_dir:
            argv += ["--data-dir", str(args.data_dir)]
        commands[name] = (argv, runs / f"{name}.log")
    run_logged(commands, args.jobs)


DOWNSTREAM = ("vqgan", "kl")  # unclip on VQ codes (snapped) vs kl latents (latent diffusion)
COMMITTED = REPO_ROOT / "models" / "twemoji"  # its CLIP and prior serve both downstream bundles
DOWNSTREAM_PROMPTS = 100  # distinct captions per split


def decoder_argv(runs: Path, name: str, steps: int, threads: int, minutes: float | None) -> list:
    """``tessera train decoder`` arguments for the downstream decoder on tokenizer ``name``:
    the ``tessera train all`` recipe's small decoder over the committed CLIP."""
    from tessera.bundle.train_all import SMALL_DECODER

    argv = ["--dataset", "twemoji", "--tokenizer", str(runs / name), "--clip",
            str(COMMITTED / "clip"), "--out", str(runs / f"bundle-{name}" / "decoder"),
            "--steps", str(steps), "--threads", str(threads), "--seed", "0",
            *SMALL_DECODER]  # fmt: skip
    return argv + (["--max-minutes", str(minutes)] if minutes else [])


def train_decoders(runs: Path, steps: int, threads: int, minutes: float | None, jobs: int) -> None:
    """The downstream decoders not trained yet, ``jobs`` at a time in their own processes."""
    run_logged(
        {
            f"decoder-{n}": (
                [
                    sys.executable,
                    "-m",
                    "tessera.cli",
                    "train",
                    "decoder",
                    *decoder_argv(runs, n, steps, threads, minutes),
                ],
                runs / f"decoder-{n}.log",
            )  # fmt: skip
            for n in DOWNSTREAM
            if not (runs / f"bundle-{n}" / "decoder" / "config.json").is_file()
        },
        jobs,
    )


def downstream(runs: Path) -> dict:
    """unclip judge accuracy per tokenizer under one decoder budget (see the docstring); the
    decoders are trained (``train_decoders``)."""
    import shutil

    import numpy as np

    from tessera.common.checkpoint import write_bundle_index
    from tessera.data import load_dataset
    from tessera.evaluation.bundle import DEFAULT_JUDGE, distinct_caption_rows, generate
    from tessera.evaluation.judge import load_judge
    from tessera.routes.local import local_pipelines

    judge = load_judge(DEFAULT_JUDGE)
    results: dict = {"prompts_per_split": DOWNSTREAM_PROMPTS}
    for name in DOWNSTREAM:
        bundle = runs / f"bundle-{name}"
        for component in ("tokenizer", "clip", "prior"):
            src = runs / name if component == "tokenizer" else COMMITTED / component
            shutil.rmtree(bundle / component, ignore_errors=True)
            shutil.copytree(src, bundle / component, ignore=shutil.ignore_patterns("train_state"))
        shutil.rmtree(bundle / "decoder" / "cache", ignore_errors=True)
        write_bundle_index(bundle, "twemoji", {"dataset": "twemoji", "tokenizer_run": name})
        pipelines = local_pipelines(bundle)
        trained = json.loads((bundle / "decoder" / "train_summary.json").read_text())
        row: dict = {"decoder_steps": trained["steps"], "decoder_minutes": trained["seconds"] / 60}
        for split in ("train", "heldout"):
            ds = load_dataset("twemoji", split)
            rows = distinct_caption_rows(ds, DOWNSTREAM_PROMPTS)
            prompts = [ds.captions[r][0] for r in rows]
            images = generate(pipelines, "unclip", prompts)
            truth = ds.labels["subgroup"][rows]
            row[f"{split}_judge_acc"] = float(np.mean(judge.score(images)["subgroup"] == truth))
        results[name] = row
        print(f"downstream {name}: {row}", flush=True)
    return results


def downstream_table(results: dict) -> str:
    """The downstream row as markdown, appended to TABLE.md."""
    lines = [
        "",
        "Downstream: the `unclip` route with each tokenizer, its own diffusion decoder "
        "(same recipe and budget) and the committed CLIP and prior; judge subgroup accuracy on "
        f"{results['prompts_per_split']} distinct captions per split:",
        "",
        "| tokenizer | decoder on | decoder steps (min) | unclip judge acc, train | held out |",
        "|---|---|---|---|---|",
    ]
    for name in DOWNSTREAM:
        if name in results:
            r = results[name]
            space = "kl latents (latent diffusion)" if name == "kl" else "VQ codes (snapped)"
            lines.append(
                f"| {name} | {space} | {r['decoder_steps']} ({r['decoder_minutes']:.1f}) | "
                f"{r['train_judge_acc']:.3f} | {r['heldout_judge_acc']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from tessera.evaluation import tokenizers

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=["twemoji", "shapes"], default="twemoji")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps per kind")
    parser.add_argument("--max-minutes", type=float, default=None, help="training minutes per kind")
    parser.add_argument(
        "--kinds", nargs="+", choices=list(KINDS), default=["vqgan", "dvae", "kl", "vae"]
    )
    parser.add_argument("--train-only", action="store_true", help="train, do not measure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true", help="measure what is trained")
    parser.add_argument("--downstream-steps", type=int, default=0, help="0: no downstream row")
    parser.add_argument("--downstream-minutes", type=float, default=None)
    parser.add_argument("--reference", type=Path, default=None, help="another tokenizer to show")
    parser.add_argument("--jobs", type=int, default=1, help="kinds trained at a time")
    parser.add_argument("--runs", type=Path, default=RUNS, help="where the weights go")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the tables go")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--preset", default="default", help="tokenizer preset (tests: tiny)")
    parser.add_argument("--prior-samples", type=int, default=128, help="per kind, measured")
    args = parser.parse_args(argv)
    runs = args.runs / args.dataset
    if not args.eval_only and args.jobs > 1 and len(args.kinds) > 1:
        train_in_parallel(args)
    elif not args.eval_only:
        for name in args.kinds:
            train(name, runs / name, args.dataset, args.steps, args.threads, args.max_minutes,
                  args.data_dir, args.preset)  # fmt: skip
    if args.train_only:
        return 0
    dirs = {k: runs / k for k in args.kinds if (runs / k / "config.json").is_file()}
    if "vqvae" not in dirs and (runs / "vqgan" / "vqvae" / "config.json").is_file():
        dirs["vqvae"] = runs / "vqgan" / "vqvae"  # the VQ-GAN run at its GAN switch
    eval_argv = ["--dataset", args.dataset, "--out", str(args.results / args.dataset)]
    eval_argv += ["--threads", str(args.threads), "--prior-samples", str(args.prior_samples)]
    if args.data_dir:
        eval_argv += ["--data-dir", str(args.data_dir)]
    for name, path in dirs.items():
        eval_argv += ["--checkpoint", f"{name}={path}"]
    if args.reference:
        eval_argv += ["--checkpoint", f"committed-vqgan={args.reference}"]
    eval_parser = argparse.ArgumentParser(prog="tessera eval tokenizers")
    tokenizers.add_arguments(eval_parser)
    status = tokenizers.run(eval_parser.parse_args(eval_argv))
    if status or not args.downstream_steps or args.dataset != "twemoji":
        return status
    train_decoders(runs, args.downstream_steps, args.threads, args.downstream_minutes, args.jobs)
    results = downstream(runs)
    out = args.results / args.dataset
    (out / "downstream.json").write_text(json.dumps(results, indent=1))
    with open(out / "TABLE.md", "a") as table:
        table.write(downstream_table(results))
    print(downstream_table(results))
    print(f"wrote {out / 'downstream.json'}, appended to TABLE.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
