"""``tessera eval lm``: how well an ImageGPT checkpoint models and draws its data set.

Writes to ``--out`` (default ``<checkpoint>/eval``):

- ``metrics.json``: bits per image token on held-out images (and on training images, for the
  gap); on shapes, the exact checker's verdict on sampled images for every training and every
  held-out attribute combination (exact match, per attribute, "clean single shape" rate), next
  to the same checker on VQ reconstructions of real images (the tokenizer's ceiling); the KV
  cache's speed-up over cache-free sampling for one full grid.
- ``samples_train.png`` / ``samples_heldout.png``: per row, the real image, its VQ
  reconstruction, then samples for its canonical caption (fixed prompts and seeds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from tessera.common.checkpoint import load_component
from tessera.common.images import tensor_to_arrays
from tessera.common.text_encoder import TextBatch
from tessera.lm.model import ImageGPT
from tessera.lm.sampling import SamplingParams, resolve_temperature, sample_tokens
from tessera.lm.train import (
    LMData,
    bits_per_token,
    fixed_rows,
    load_tokenizer,
    prepare_split,
    sample_grid,
)
from tessera.training.cli import add_dataset_arguments, add_runtime_arguments, start_command
from tessera.training.components import component_dir
from tessera.training.reports import write_report

ATTRIBUTES = ("color", "shape", "position", "size")


@torch.no_grad()
def measure_cache_speedup(
    model: ImageGPT,
    text: TextBatch,
    *,
    guidance_scale: float | None = None,
    repeats: int = 1,
) -> dict:
    """Seconds to sample one full grid per row with and without the KV cache (best of
    ``repeats``), the speed-up, and whether both gave the same tokens."""
    params = [SamplingParams(seed=i, guidance_scale=guidance_scale) for i in range(len(text.mask))]
    timings, grids = {}, {}
    for use_cache in (True, False):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            grids[use_cache] = sample_tokens(model, text, params, use_cache=use_cache)
            if grids[use_cache].is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        timings[use_cache] = best
    return {
        "batch": len(text.mask),
        "tokens_per_grid": model.config.n_tokens,
        "cached_s": round(timings[True], 4),
        "cache_free_s": round(timings[False], 4),
        "speedup": round(timings[False] / timings[True], 2),
        "same_tokens": bool(torch.equal(grids[True], grids[False])),
        # float32 rounding differs between the two paths (~1e-6 in the logits); a draw that
        # lands that close to a CDF boundary flips a code (rare once trained; see the notes).
        "token_match": round(float((grids[True] == grids[False]).float().mean()), 4),
    }


@torch.no_grad()
def shapes_accuracy(
    model: ImageGPT,
    tokenizer: nn.Module,
    data: LMData,
    device: torch.device,
    *,
    samples_per_prompt: int = 1,
    batch_size: int = 64,
    params: SamplingParams | None = None,
    desc: str = "shapes",
) -> dict:
    """Sample every distinct canonical caption of ``data`` and read the images back with the
    exact checker. Also checks one VQ reconstruction of a real image per caption."""
    from tessera.data.shapes import check_image, parse_caption

    base = params or SamplingParams()
    first_row: dict[int, int] = {}
    for row, caps in enumerate(data.per_image):
        first_row.setdefault(caps[0], row)
    prompts = sorted(first_row)  # caption ids
    jobs = [(c, s) for c in prompts for s in range(samples_per_prompt)]
    model.eval()
    verdicts = []  # (target attrs, checked attrs | None, is_sample)
    for i in tqdm(range(0, len(jobs), batch_size), desc=f"sample {desc}", unit="batch"):
        chunk = jobs[i : i + batch_size]
        text = data.text(torch.tensor([c for c, _ in chunk]), device)
        ps = [
            SamplingParams(base.temperature, base.top_k, base.top_p, base.guidance_scale, seed=s)
            for _, s in chunk
        ]
        images = tensor_to_arrays(tokenizer.decode_indices(sample_tokens(model, text, ps)))
        for (c, _), img in zip(chunk, images, strict=True):
            verdicts.append((parse_caption(data.texts[c]), check_image(img), True))
    g = model.config.grid_size
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i : i + batch_size]
        codes = data.codes[[first_row[c] for c in chunk]].view(len(chunk), g, g).to(device)
        images = tensor_to_arrays(tokenizer.decode_indices(codes))
        for c, img in zip(chunk, images, strict=True):
            verdicts.append((parse_caption(data.texts[c]), check_image(img), False))
    return {
        "prompts": len(prompts),
        "samples": len(jobs),
        "sampled": _score([(t, got) for t, got, sampled in verdicts if sampled]),
        "vq_reconstruction": _score([(t, got) for t, got, sampled in verdicts if not sampled]),
    }


def _score(pairs: list) -> dict:
    n = max(1, len(pairs))
    out = {
        "exact": sum(got == target for target, got in pairs) / n,
        "clean": sum(got is not None for _, got in pairs) / n,
    }
    for attr in ATTRIBUTES:
        hits = sum(got is not None and getattr(got, attr) == getattr(t, attr) for t, got in pairs)
        out[attr] = hits / n
    return {k: round(v, 4) for k, v in out.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="LM checkpoint (or bundle)")
    parser.add_argument("--tokenizer", type=Path, required=True, help="tokenizer checkpoint")
    add_dataset_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="default: <checkpoint>/eval")
    parser.add_argument("--samples-per-prompt", type=int, default=1, help="shapes accuracy")
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: model's")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's own")
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bpt-limit", type=int, default=4096, help="images scored for bits")
    add_runtime_arguments(parser, threads=2, training=False)


def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    device = start_command(args)
    lm_dir = component_dir(args.checkpoint, "lm")
    model = load_component(lm_dir, device=device)
    tokenizer, digest = load_tokenizer(args.tokenizer, device)
    out = Path(args.out or lm_dir / "eval")
    out.mkdir(parents=True, exist_ok=True)
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.guidance_scale)

    train = prepare_split(
        load_dataset(args.dataset, "train", data_dir=args.data_dir),
        tokenizer, digest, args.data_dir, canonical_only=True, device=device,
    )  # fmt: skip
    heldout = prepare_split(
        load_dataset(args.dataset, "heldout", data_dir=args.data_dir),
        tokenizer, digest, args.data_dir, canonical_only=True, device=device,
    )  # fmt: skip
    metrics: dict = {
        "dataset": args.dataset,
        "checkpoint": str(lm_dir),
        "tokenizer_sha256": digest,
        "params": model.num_params(),
        "sampling": {
            "temperature": resolve_temperature(params, model.config),
            "top_k": params.top_k,
            "top_p": params.top_p,
            "guidance_scale": model.config.guidance_scale
            if params.guidance_scale is None
            else params.guidance_scale,
        },
        "heldout_bits_per_token": round(
            bits_per_token(model, heldout, device, limit=args.bpt_limit), 4
        ),
        "train_bits_per_token": round(
            bits_per_token(model, train, device, limit=args.bpt_limit), 4
        ),
    }
    print(
        f"bits/token: held-out {metrics['heldout_bits_per_token']:.3f}, "
        f"train {metrics['train_bits_per_token']:.3f}"
    )
    for name, data in (("train", train), ("heldout", heldout)):
        picture = sample_grid(
            model, tokenizer, data, fixed_rows(data, 8), device,
            guidance_scale=params.guidance_scale, temperature=params.temperature,
            top_k=params.top_k, top_p=params.top_p,
        )  # fmt: skip
        Image.fromarray(picture).save(out / f"samples_{name}.png")
    if args.dataset == "shapes":
        for name, data in (("train", train), ("heldout", heldout)):
            acc = shapes_accuracy(
                model, tokenizer, data, device, params=params, desc=name,
                samples_per_prompt=args.samples_per_prompt, batch_size=args.batch_size,
            )  # fmt: skip
            metrics[f"shapes_{name}_combinations"] = acc
            sampled, ceiling = acc["sampled"]["exact"], acc["vq_reconstruction"]["exact"]
            print(
                f"shapes {name} combinations ({acc['prompts']}): checker accepts {sampled:.3f} "
                f"of samples ({ceiling:.3f} of VQ reconstructions)"
            )
    rows = fixed_rows(train, 4)
    text = train.text(torch.tensor([train.per_image[r][0] for r in rows]), device)
    metrics["kv_cache"] = measure_cache_speedup(model, text, guidance_scale=params.guidance_scale)
    print(f"KV cache: {metrics['kv_cache']}")
    write_report(out / "metrics.json", metrics)
    print(f"wrote {out / 'metrics.json'}")
    return 0


def bench_main(argv: list[str] | None = None) -> int:
    """``python -m tessera.lm.eval``: KV cache vs cache-free sampling of full grids with random
    weights (no checkpoint needed), as JSON on stdout; ``make bench`` runs it."""
    from tessera.lm.model import LMConfig
    from tessera.lm.train import PRESETS

    parser = argparse.ArgumentParser(prog="python -m tessera.lm.eval")
    parser.add_argument("--preset", choices=list(PRESETS), default="small")
    parser.add_argument("--grid-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--caption-tokens", type=int, default=12)
    parser.add_argument("--guidance-scale", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    device = start_command(args)
    torch.manual_seed(0)
    config = LMConfig(grid_size=args.grid_size, vocab_size=args.vocab_size, **PRESETS[args.preset])
    model = ImageGPT(config).to(device).eval()
    states = torch.randn(args.batch, config.text_len, config.text_dim, device=device)
    mask = torch.zeros(args.batch, config.text_len, dtype=torch.bool, device=device)
    mask[:, : args.caption_tokens] = True
    text = TextBatch(states, mask, states.new_zeros(args.batch, config.text_dim))
    result = measure_cache_speedup(
        model, text, guidance_scale=args.guidance_scale, repeats=args.repeats
    )
    result.update(preset=args.preset, params=model.num_params(), device=str(device))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(bench_main())
