"""`tessera train all`: train every component in order from one seed and write a bundle.

Order: tokenizer → CLIP → LM → prior → decoder (the LM and the decoder need the tokenizer,
the prior and the decoder need CLIP). Each step is the component's own training command,
run in-process with the recipe's arguments, writing straight into ``OUT/<component>``;
``--resume`` continues each from its checkpoint, so an interrupted run picks up where it
stopped and finished components are skipped. The bundle index records how everything was
trained (data version, split, commit, seed, steps, wall time); ``training.json`` and the index
record paths inside the repository relative to its root, so they read the same on every
machine.

``--tokenizer-kind`` picks the tokenizer's bottleneck (``tessera train tokenizer --kind``):
``vq`` (default), ``gumbel``, ``kl`` or ``vae``. A continuous tokenizer (kl, vae) has no token
ids, so its bundle has no LM and serves the unclip route only (latent diffusion on its
latents).

``--tokenizer-recipe 4k-wide`` trains the tokenizer that reaches 26 dB on held-out Twemoji
(4,096 codes, a wider trunk, no GAN phase; ~55 minutes instead of 25).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from tessera.common.checkpoint import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_component,
    save_component,
    write_bundle_index,
)
from tessera.common.settings import REPO_ROOT
from tessera.tokenizer.train import STATE_DIR as TOKENIZER_STATE_DIR
from tessera.training.reports import repo_relative

# component -> (training module, extra arguments given the bundle dir)
ORDER = ("tokenizer", "clip", "lm", "prior", "decoder")
MODULES = {
    "tokenizer": "tessera.tokenizer.train",
    "clip": "tessera.clip.train",
    "lm": "tessera.lm.train",
    "prior": "tessera.prior.train",
    "decoder": "tessera.decoder.train",
}
# A decoder ~3.5x cheaper than the default config with half the batch: many more optimiser
# steps in the same minutes, which a diffusion model needs more than width.
SMALL_DECODER = ["--widths", "48", "96", "--num-res-blocks", "1", "--batch-size", "32"]
# Steps and presets sized for a 2-core CPU (about 90 minutes for Twemoji in all).
RECIPES: dict[str, dict[str, list[str]]] = {
    "twemoji": {
        "tokenizer": ["--steps", "6000", "--max-minutes", "25"],
        "clip": ["--steps", "3000", "--max-minutes", "12", "--preset", "small"],
        "lm": ["--steps", "5000", "--max-minutes", "22", "--token-noise", "0.1"],
        "prior": ["--steps", "4000", "--max-minutes", "8", "--preset", "small"],
        "decoder": ["--steps", "8000", "--max-minutes", "18"] + SMALL_DECODER,
    },
    # The checker needs crisp edges: VQ-VAE only, a small codebook, a longer LM. The tokenizer
    # encodes each cell's patch alone (an edit leaves untouched cells' codes as they were) and
    # also learns the edit set's two-shape scenes (`tessera data prepare edits-shapes` first).
    "shapes": {
        "tokenizer": ["--steps", "8000", "--max-minutes", "30", "--no-gan", "--local-encoder"]
        + ["--codebook-size", "512", "--edit-images", "edits-shapes"],
        "clip": ["--steps", "1500", "--max-minutes", "5", "--preset", "small"],
        "lm": ["--steps", "4000", "--max-minutes", "22", "--token-noise", "0.1"],
        "prior": ["--steps", "2000", "--max-minutes", "5", "--preset", "small"],
        "decoder": ["--steps", "6000", "--max-minutes", "12"] + SMALL_DECODER,
    },
}


CONTINUOUS_KINDS = ("kl", "vae")

# The tokenizer that meets issue 20's bar (held-out Twemoji 26.08 dB at the 8x8 grid, 97.5% of
# codes used; benchmarks/results/tokenizer_kinds/twemoji-rate/): 4,096 codes (12 bits per
# cell), a 1.5x wider trunk, no GAN phase.
WIDE_4K = ["--codebook-size", "4096", "--channels", "48", "--no-gan"]
# Tokenizer recipes, appended after the dataset's (the later flag wins). "4k-wide" takes ~55
# minutes on one thread instead of 25, and its 4,096-code vocabulary makes the LM's larger.
TOKENIZER_RECIPES: dict[str, list[str]] = {
    "default": [],
    "4k-wide": [*WIDE_4K, "--steps", "12000", "--max-minutes", "60"],
}


def component_args(
    component: str, out: Path, dataset: str, seed: int, resume: bool, threads: int = 1,
    tokenizer_kind: str = "vq", tokenizer_recipe: str = "default",
) -> list[str]:  # fmt: skip
    args = ["--dataset", dataset, "--out", str(out / component), "--seed", str(seed)]
    args += ["--threads", str(threads)]
    if component in ("lm", "decoder"):
        args += ["--tokenizer", str(out / "tokenizer")]
    if component in ("prior", "decoder"):
        args += ["--clip", str(out / "clip")]
    if resume and (out / component / CONFIG_NAME).is_file():
        args.append("--resume")
    if component == "tokenizer" and tokenizer_kind != "vq":
        args += ["--kind", tokenizer_kind]
    args += RECIPES[dataset][component]
    if component == "tokenizer":
        args += TOKENIZER_RECIPES[tokenizer_recipe]
    return args


def recorded_args(argv: list[str], out: Path) -> list[str]:
    """``argv`` as ``training.json`` records it: the paths inside the bundle ``out`` (its
    component directories) relative to the repository root."""
    root = str(out)
    return [repo_relative(Path(a)) if a == root or a.startswith(f"{root}/") else a for a in argv]


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=sorted(RECIPES), default="twemoji")
    parser.add_argument("--out", type=Path, default=None, help="default: models/<dataset>")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--only", choices=ORDER, nargs="+", default=None, help="train these only")
    parser.add_argument("--half", action="store_true", help="store weights in float16")
    parser.add_argument(
        "--tokenizer-kind", choices=["vq", "gumbel", "kl", "vae"], default="vq",
        help="the tokenizer's bottleneck; kl / vae bundles have no LM (unclip route only)",
    )  # fmt: skip
    parser.add_argument(
        "--tokenizer-recipe", choices=sorted(TOKENIZER_RECIPES), default="default",
        help="4k-wide: 4,096 codes, 1.5x width, no GAN (26 dB on Twemoji; ~55 min, not 25)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per trainer (1: fastest on 2 cores)"
    )
    parser.add_argument(
        "--keep-train-state", action="store_true", help="keep optimizer states (to train further)"
    )


def run(args: argparse.Namespace) -> int:
    out = args.out or REPO_ROOT / "models" / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "training.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    kind = getattr(args, "tokenizer_kind", "vq")
    for i, component in enumerate(ORDER, 1):
        if args.only and component not in args.only:
            continue
        if component == "lm" and kind in CONTINUOUS_KINDS:
            print(f"[{i}/{len(ORDER)}] lm: skipped (a {kind} tokenizer has no token ids)")
            continue
        module = importlib.import_module(MODULES[component])
        recipe = getattr(args, "tokenizer_recipe", "default")
        argv = component_args(
            component, out, args.dataset, args.seed, args.resume, args.threads, kind, recipe
        )
        print(
            f"[{i}/{len(ORDER)}] {component}: tessera train {component} {' '.join(argv)}",
            flush=True,
        )
        parser = argparse.ArgumentParser(prog=f"tessera train {component}")
        module.add_arguments(parser)
        start = time.time()
        status = module.run(parser.parse_args(argv))
        if status:
            print(f"{component} training failed with status {status}")
            return status
        log[component] = {"args": recorded_args(argv, out), "wall_s": round(time.time() - start, 1)}
        log_path.write_text(json.dumps(log, indent=2) + "\n")
    finalize_bundle(out, args.dataset, args.seed, log, args.half, args.keep_train_state)
    return 0


def finalize_bundle(
    out: Path, dataset: str, seed: int, log: dict, half: bool, keep_train_state: bool
) -> dict:
    """Half precision (all but the tokenizer), drop what only training needs, and write the
    index with checksums and how every component was trained (``log``: component -> args +
    wall time)."""
    for component in ORDER:
        cdir = out / component
        # The tokenizer stays float32: its codes are what the LM and the decoder were trained
        # on, and rounding its weights moves latents across code boundaries (89% of the shapes
        # tokenizer's codes change, where restarted codes sit 0.003 apart).
        if half and component != "tokenizer" and (cdir / WEIGHTS_NAME).is_file():
            model = load_component(cdir)
            save_component(cdir, model, model.config, half=True)
        if not keep_train_state:  # the bundle ships weights only; resume needs these
            for state in cdir.glob("optimizer*.safetensors"):
                state.unlink()
            shutil.rmtree(cdir / TOKENIZER_STATE_DIR, ignore_errors=True)
            shutil.rmtree(cdir / "vqvae", ignore_errors=True)  # the tokenizer's pre-GAN snapshot
            shutil.rmtree(cdir / "cache", ignore_errors=True)  # the decoder's encoded data
            (cdir / "online.safetensors").unlink(missing_ok=True)  # the decoder's non-EMA weights
    data_meta = REPO_ROOT / ".data" / dataset / "meta.json"
    data = json.loads(data_meta.read_text()) if data_meta.is_file() else {}
    training = {
        "dataset": dataset,
        "data": {
            "source": data.get("source"),
            "format_version": data.get("format_version"),
            "split": {k: v for k, v in data.get("split", {}).items() if k != "heldout_concepts"},
        },
        "commit": git_commit(),
        "seed": seed,
        "components": log,
        "wall_s": round(sum(v["wall_s"] for v in log.values()), 1),
        "half": half,
    }
    index = write_bundle_index(out, dataset, training)
    print(f"wrote bundle {out} with {', '.join(index['components'])}")
    return index
