"""``tessera eval decoder``: reconstruct-from-embedding, DDIM vs full DDPM.

For fixed images of the training and held-out splits (evenly spaced rows, so the same ones
every run), take the CLIP image embedding of the image and its canonical caption, sample
latents with DDIM (``--steps``, default 25) and with DDPM over the full training schedule,
decode them with the VQ model, and score each sampler on:

- ``clip_cosine``: cosine between the CLIP embedding of the decoded image and the source
  embedding (the thing the decoder is asked to invert), beside the VQ reconstruction's cosine
  (a ceiling) and the cosine between mismatched pairs (a floor);
- ``latent_mse``: MSE to the true latents of the source image in the normalised diffusion
  space, beside the MSE between mismatched true latents;
- on shapes, ``checker_accuracy``: the exact checker reads the decoded image back into the
  source's colour, shape, position and size (all four right), beside the VQ reconstruction's.

The stated margin: DDIM-25 is "within margin" of DDPM-full when its CLIP cosine is at most
``--margin`` (default 0.03) below DDPM's (and, on shapes, its checker accuracy at most
``100·margin`` points below). Writes ``OUT/decoder_eval.json`` and ``OUT/grid_<split>.png``
(rows: image, VQ reconstruction, DDIM, DDPM) and ``OUT/guidance_<split>.png`` (DDIM at
guidance 0, 1, 3, 6).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tessera.common.images import encode_png, make_grid, tensor_to_arrays
from tessera.common.text_encoder import TextEncoder
from tessera.decoder.model import LatentDecoder
from tessera.decoder.sampling import sample_latents
from tessera.decoder.train import encode_images
from tessera.training.cli import add_dataset_arguments, add_runtime_arguments, start_command
from tessera.training.components import load_any
from tessera.training.images import to_float
from tessera.training.reports import write_report

GUIDANCE_SWEEP = (0.0, 1.0, 3.0, 6.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--decoder", type=Path, required=True, help="trained decoder directory")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--clip", type=Path, required=True)
    add_dataset_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="where JSON and PNGs go")
    parser.add_argument("--n", type=int, default=16, help="images per split")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--ddpm-steps", type=int, default=None, help="default: full schedule")
    parser.add_argument("--guidance", type=float, default=None, help="default: the model's")
    parser.add_argument("--margin", type=float, default=0.03)
    parser.add_argument("--splits", nargs="+", default=["train", "heldout"])
    add_runtime_arguments(parser, threads=2, training=False)
    parser.add_argument("--seed", type=int, default=0)


def pick_rows(n_total: int, n: int) -> np.ndarray:
    """``n`` evenly spaced rows: fixed across runs, spread over the data set's concepts."""
    return np.unique(np.linspace(0, n_total - 1, num=min(n, n_total)).round().astype(np.int64))


@torch.no_grad()
def clip_cosine(clip: nn.Module, images: Tensor, target: Tensor) -> Tensor:
    """(B,3,S,S) decoded images vs (B,D) source embeddings -> (B,) cosine."""
    return (clip.embed_image(images) * target).sum(-1)


def shapes_accuracy(ds: object, rows: np.ndarray, images: np.ndarray) -> dict:
    """Exact-checker accuracy of decoded images against the source images' attributes."""
    from tessera.data.shapes import check_image

    kinds = ("color", "shape", "position", "size")
    hits = {k: 0 for k in kinds}
    exact = 0
    for img, row in zip(images, rows, strict=True):
        got = check_image(img)
        want = {k: ds.label_of(k, int(row)) for k in kinds}
        ok = {k: got is not None and getattr(got, k) == want[k] for k in kinds}
        exact += all(ok.values())
        for k in kinds:
            hits[k] += ok[k]
    n = len(rows)
    return {"checker_accuracy": exact / n, **{f"{k}_accuracy": hits[k] / n for k in kinds}}


def evaluate_split(
    model: LatentDecoder,
    vq: nn.Module,
    clip: nn.Module,
    encoder: TextEncoder,
    ds: object,
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[dict, np.ndarray, np.ndarray]:
    rows = pick_rows(len(ds), args.n)
    images = ds.images[rows]
    latents, emb = encode_images(vq, clip, images, device)
    latents, emb = latents.to(device), emb.to(device)
    captions = [ds.captions[int(i)][0] for i in rows]
    text = encoder.encode(captions).to(device)
    seeds = [args.seed + i for i in range(len(rows))]
    cfg = model.config
    ddpm_steps = args.ddpm_steps or cfg.num_train_timesteps
    perm = torch.roll(torch.arange(len(rows)), 1)  # mismatched pairs for the floors
    x_true = to_float(torch.from_numpy(np.ascontiguousarray(images))).to(device)
    recon = vq.decode_latents(latents)
    result: dict = {
        "rows": rows.tolist(),
        "captions": captions,
        "vq_reconstruction": {"clip_cosine": float(clip_cosine(clip, recon, emb).mean())},
        "mismatched_pairs": {
            "clip_cosine": float((emb * emb[perm]).sum(-1).mean()),
            "latent_mse": float(
                F.mse_loss(model.normalize_latents(latents), model.normalize_latents(latents[perm]))
            ),
        },
        "source_image_clip_cosine": float(clip_cosine(clip, x_true, emb).mean()),
    }
    if ds.name == "shapes":
        result["vq_reconstruction"].update(shapes_accuracy(ds, rows, tensor_to_arrays(recon)))
    decoded = {}
    for name, scheduler, steps in (("ddim", "ddim", args.steps), ("ddpm", "ddpm", ddpm_steps)):
        t0 = time.time()
        z = sample_latents(
            model, emb, text, seeds=seeds, steps=steps, guidance_scale=args.guidance,
            scheduler=scheduler,
        )  # fmt: skip
        seconds = time.time() - t0
        img = vq.decode_latents(z)
        decoded[name] = tensor_to_arrays(img)
        metrics = {
            "scheduler": scheduler,
            "steps": steps,
            "seconds_per_image": round(seconds / len(rows), 4),
            "clip_cosine": float(clip_cosine(clip, img, emb).mean()),
            "latent_mse": float(
                F.mse_loss(model.normalize_latents(z), model.normalize_latents(latents))
            ),
        }
        if ds.name == "shapes":
            metrics.update(shapes_accuracy(ds, rows, decoded[name]))
        result[name] = metrics
    gap = result["ddpm"]["clip_cosine"] - result["ddim"]["clip_cosine"]
    within = gap <= args.margin
    if ds.name == "shapes":
        acc_gap = result["ddpm"]["checker_accuracy"] - result["ddim"]["checker_accuracy"]
        within = within and acc_gap <= args.margin
    result["ddim_vs_ddpm"] = {"clip_cosine_gap": gap, "margin": args.margin, "within": within}
    tiles = (
        list(images) + list(tensor_to_arrays(recon)) + list(decoded["ddim"]) + list(decoded["ddpm"])
    )
    grid = make_grid(tiles, columns=len(rows))
    sweep = list(images)
    for g in GUIDANCE_SWEEP:
        z = sample_latents(model, emb, text, seeds=seeds, steps=args.steps, guidance_scale=g)
        sweep += list(tensor_to_arrays(vq.decode_latents(z)))
    return result, grid, make_grid(sweep, columns=len(rows))


def run(args: argparse.Namespace) -> int:
    from tessera.data import load_dataset

    device = start_command(args)
    model = load_any(args.decoder, "decoder", device).eval()
    vq = load_any(args.tokenizer, "tokenizer", device).eval()
    clip = load_any(args.clip, "clip", device).eval()
    encoder = TextEncoder(device=device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "dataset": args.dataset,
        "decoder": str(args.decoder),
        "guidance": args.guidance if args.guidance is not None else model.config.default_guidance,
        "prediction_type": model.config.prediction_type,
        "metric_note": (
            "clip_cosine: CLIP(decoded) vs the source image embedding; latent_mse: normalised "
            "latent space vs the source's true latents; checker_accuracy: all 4 shape attributes"
        ),
        "splits": {},
    }
    with torch.inference_mode():
        for split in args.splits:
            ds = load_dataset(args.dataset, split, data_dir=args.data_dir)
            result, grid, sweep = evaluate_split(model, vq, clip, encoder, ds, args, device)
            report["splits"][split] = result
            (out / f"grid_{split}.png").write_bytes(encode_png(grid, scale=2))
            (out / f"guidance_{split}.png").write_bytes(encode_png(sweep, scale=2))
            summary = {k: result[k] for k in ("ddim", "ddpm", "vq_reconstruction")}
            print(split, json.dumps(summary))
    write_report(out / "decoder_eval.json", report)
    print(f"wrote {out / 'decoder_eval.json'}")
    return 0
