"""The tokenizer family side by side (issue 20): VQ-GAN, VQ-VAE, dVAE, KL autoencoder, plain
VAE, each trained by ``tessera train tokenizer`` with the same trunk, data and step budget,
then measured in one run by ``tessera eval tokenizers``.

    python -m benchmarks.tokenizer_kinds [--steps 1000] [--dataset twemoji]

Weights go under ``runs/tokenizer-kinds/<dataset>/<name>`` (git-ignored); a finished run is
reused, an interrupted one resumed. Results: ``benchmarks/results/tokenizer_kinds/<dataset>/``
(``metrics.json``, ``TABLE.md``, ``reconstructions.png``, ``prior_samples.png``). Training is
sequential on one thread (``--threads``), so the minutes in the table compare.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tessera.common.settings import REPO_ROOT

# name -> `tessera train tokenizer` arguments (besides --out, --steps, --dataset, --threads)
KINDS: dict[str, list[str]] = {
    "vqgan": ["--kind", "vq"],  # today's recipe: VQ-VAE, then the GAN phase (last 35%)
    "dvae": ["--kind", "gumbel"],  # DALL·E: relaxed one-hot, annealed tau, KL to uniform
    "kl": ["--kind", "kl"],  # KL autoencoder (latent diffusion's), KL weight 1e-3
    "vae": ["--kind", "vae"],  # plain VAE: KL weight 1
    "vqvae": ["--kind", "vq", "--no-gan"],  # VQ-VAE for the whole budget
}
RUNS = REPO_ROOT / "runs" / "tokenizer-kinds"
RESULTS = REPO_ROOT / "benchmarks" / "results" / "tokenizer_kinds"


def trained_steps(out: Path) -> int:
    state = out / "train_state" / "state.json"
    return int(json.loads(state.read_text())["step"]) if state.is_file() else 0


def train(name: str, out: Path, dataset: str, steps: int, threads: int) -> None:
    from tessera.tokenizer import train as tok_train

    if trained_steps(out) >= steps:
        print(f"{name}: {out} already has {steps} steps", flush=True)
        return
    argv = ["--dataset", dataset, "--out", str(out), "--steps", str(steps)]
    argv += ["--threads", str(threads), "--no-progress", "--resume", *KINDS[name]]
    if dataset == "shapes":  # the shapes recipe's codebook (bundle/train_all.py)
        argv += ["--codebook-size", "256"]
    parser = argparse.ArgumentParser(prog="tessera train tokenizer")
    tok_train.add_arguments(parser)
    print(f"== tessera train tokenizer {' '.join(argv)}", flush=True)
    if tok_train.run(parser.parse_args(argv)):
        raise SystemExit(f"training {name} failed")


def main() -> int:
    from tessera.evaluation import tokenizers

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", choices=["twemoji", "shapes"], default="twemoji")
    parser.add_argument("--steps", type=int, default=1000, help="optimiser steps per kind")
    parser.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true", help="measure what is trained")
    args = parser.parse_args()
    runs = RUNS / args.dataset
    if not args.eval_only:
        for name in args.kinds:
            train(name, runs / name, args.dataset, args.steps, args.threads)
    present = [k for k in args.kinds if (runs / k / "config.json").is_file()]
    argv = ["--dataset", args.dataset, "--out", str(RESULTS / args.dataset)]
    argv += ["--threads", str(args.threads)]
    for name in present:
        argv += ["--checkpoint", f"{name}={runs / name}"]
    eval_parser = argparse.ArgumentParser(prog="tessera eval tokenizers")
    tokenizers.add_arguments(eval_parser)
    return tokenizers.run(eval_parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
