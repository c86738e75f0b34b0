"""``tessera train decoder``: DDPM training of the latent decoder against a trained VQ tokenizer
and a trained CLIP.

Everything the decoder reads is precomputed once and cached under ``OUT/cache``: the VQ
latents of the training images (``encode_latents``), their CLIP image embeddings, and the
MiniLM token states of every caption. A step draws images, one random caption each, a random
timestep, and minimises the MSE to epsilon or v with condition dropout. The latents are
normalised to ~N(0, 1) by a scalar shift/scale measured here and stored in the config.

``OUT`` is the component directory (``config.json`` + ``model.safetensors`` holding the *EMA*
weights, the ones that ship), with ``online.safetensors``, ``optimizer.safetensors`` and
``train_state.json`` beside it for ``--resume``, ``loss.png`` and ``samples/step_*.png``
(rows: image, VQ reconstruction, decoder sample from its CLIP embedding) for people.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from tessera.common.checkpoint import CONFIG_NAME, load_component, save_component
from tessera.common.errors import InvalidArgument
from tessera.common.images import encode_png, make_grid, tensor_to_arrays
from tessera.common.text_encoder import TextBatch
from tessera.decoder.model import DecoderConfig, LatentDecoder
from tessera.decoder.sampling import EMA, sample_latents
from tessera.decoder.schedulers import DDPMScheduler
from tessera.training.captions import caption_table, encode_captions, sample_captions
from tessera.training.cli import add_run_arguments, add_training_arguments, training_run
from tessera.training.components import load_any
from tessera.training.images import to_float
from tessera.training.loop import Steps, due
from tessera.training.optim import lr_at, make_optimizer, optimizer_step, set_lr
from tessera.training.plots import plot_curves
from tessera.training.reports import write_report
from tessera.training.state import has_checkpoint, load_train_state, save_train_state

ONLINE_FILE = "online.safetensors"  # the raw (non-EMA) weights, for --resume
LOG_EVERY = 10  # steps averaged into one loss-curve point


def module_digest(module: nn.Module) -> str:
    """A content hash of a module's weights (cache keys follow the tokenizer/CLIP weights)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_images(
    vq: nn.Module, clip: nn.Module, images: np.ndarray, device: torch.device, batch: int = 128
) -> tuple[Tensor, Tensor]:
    """uint8 (N,64,64,3) -> VQ latents (N,C,h,w) float32 and CLIP embeddings (N,D) float32."""
    latents, embs = [], []
    vq.eval()
    clip.eval()
    for i in range(0, len(images), batch):
        x = to_float(torch.from_numpy(np.ascontiguousarray(images[i : i + batch]))).to(device)
        latents.append(vq.encode_latents(x).float().cpu())
        embs.append(clip.embed_image(x).float().cpu())
    return torch.cat(latents), torch.cat(embs)


def cached_image_features(
    vq: nn.Module, clip: nn.Module, ds: object, cache: Path, device: torch.device
) -> dict[str, Tensor]:
    """``encode_images`` once per (data set rows, VQ weights, CLIP weights)."""
    key = hashlib.sha256(
        "\x1f".join([ds.name, *ds.keys, module_digest(vq), module_digest(clip)]).encode()
    ).hexdigest()[:16]
    path = Path(cache) / f"images-{ds.name}-{key}.safetensors"
    if path.is_file():
        return load_file(str(path))
    t0 = time.time()
    latents, embs = encode_images(vq, clip, ds.images, device)
    out = {"latents": latents.contiguous(), "image_emb": embs.contiguous()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path))
    shape = tuple(latents.shape[1:])
    print(f"encoded {len(latents)} images -> latents {shape} in {time.time() - t0:.0f}s")
    return out


@dataclass
class TrainData:
    latents: Tensor  # (N,C,h,w) VQ space
    image_emb: Tensor  # (N,D)
    states: Tensor  # (M,T,384) float16
    mask: Tensor  # (M,T) bool
    per_image: list[list[int]]  # caption ids of each image
    images: np.ndarray  # (N,64,64,3) uint8, for sample grids


def prepare(
    vq: nn.Module,
    clip: nn.Module,
    ds: object,
    cache: Path,
    device: torch.device,
    max_captions: int = 0,
) -> TrainData:
    """Cached features; ``max_captions`` > 0 keeps only each image's first captions (MiniLM
    over every Twemoji caption takes minutes on a busy CPU)."""
    feats = cached_image_features(vq, clip, ds, cache, device)
    captions = [c[:max_captions] for c in ds.captions] if max_captions > 0 else ds.captions
    texts, per_image = caption_table(captions)
    text = encode_captions(texts, cache, states=True, device=device)
    return TrainData(
        feats["latents"], feats["image_emb"], text["states"], text["mask"], per_image, ds.images
    )


def config_for(preset: str, vq: nn.Module, data: TrainData, **overrides: object) -> DecoderConfig:
    """The decoder config matching the VQ latents and CLIP embeddings, with the latent
    normalisation measured on the training latents."""
    lat = data.latents
    base = DecoderConfig.tiny() if preset == "tiny" else DecoderConfig()
    fields = {
        "latent_channels": lat.shape[1],
        "grid_size": lat.shape[2],
        "clip_dim": data.image_emb.shape[1],
        "latent_shift": float(lat.mean()),
        "latent_scale": float(1.0 / lat.std().clamp(min=1e-6)),
        **{k: v for k, v in overrides.items() if v is not None},
    }
    if preset == "tiny":  # a tiny preset still trains with the full schedule
        fields.setdefault("num_train_timesteps", 1000)
        fields.setdefault("default_steps", 25)
    for k, v in fields.items():
        setattr(base, k, v)
    base.__post_init__()
    return base


@torch.no_grad()
def sample_grid(
    model: LatentDecoder,
    vq: nn.Module,
    data: TrainData,
    rows: np.ndarray,
    device: torch.device,
    seed: int = 0,
) -> np.ndarray:
    """Three rows: the images, their VQ reconstructions, decoder samples (DDIM, default
    steps and guidance) from their CLIP embeddings and first captions."""
    states = torch.stack([data.states[data.per_image[i][0]] for i in rows]).float()
    mask = torch.stack([data.mask[data.per_image[i][0]] for i in rows])
    text = TextBatch(states.to(device), mask.to(device), states.new_zeros(len(rows), 384))
    z = sample_latents(
        model, data.image_emb[rows].to(device), text, seeds=[seed + i for i in range(len(rows))]
    )
    samples = tensor_to_arrays(vq.decode_latents(z.to(device)))
    recon = tensor_to_arrays(vq.decode_latents(data.latents[rows].to(device)))
    tiles = list(data.images[rows]) + list(recon) + list(samples)
    return make_grid(tiles, columns=len(rows))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inputs = {"--tokenizer": "trained VQ directory", "--clip": "trained CLIP directory"}
    add_run_arguments(parser, steps=20000, inputs=inputs)
    parser.add_argument("--preset", choices=["default", "tiny"], default="default")
    parser.add_argument("--prediction-type", choices=["v_prediction", "epsilon"], default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="UNet widths")
    parser.add_argument("--num-res-blocks", type=int, default=None)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--max-captions", type=int, default=0, help="per image; 0: all")
    add_training_arguments(
        parser,
        batch_size=64,
        lr=3e-4,
        weight_decay=0.01,
        warmup=200,
        every=500,
        threads=2,
        monitor="--sample-every",
    )


@training_run
def run(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from tessera.data import load_dataset

    vq = load_any(args.tokenizer, "tokenizer", device).eval().requires_grad_(False)
    clip = load_any(args.clip, "clip", device).eval().requires_grad_(False)
    train = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    data = prepare(vq, clip, train, out / "cache", device, args.max_captions)
    overrides = {
        "prediction_type": args.prediction_type,
        "widths": tuple(args.widths) if args.widths else None,
        "num_res_blocks": args.num_res_blocks,
    }
    summary = train_decoder(
        data, vq, out, args, config_for(args.preset, vq, data, **overrides), device
    )
    print(json.dumps(summary, indent=2))
    return 0


def train_decoder(
    data: TrainData,
    vq: nn.Module,
    out: Path,
    args: argparse.Namespace,
    config: DecoderConfig,
    device: torch.device,
) -> dict:
    """The loop (``args`` as ``add_arguments`` makes them); returns a summary dict."""
    if args.steps < 1 or args.batch_size < 1:
        raise InvalidArgument("--steps and --batch-size must be positive")
    out.mkdir(parents=True, exist_ok=True)
    resuming = args.resume and has_checkpoint(out)
    if resuming:  # the shipped EMA weights and the config (incl. latent scale) come from OUT
        ema_model = load_component(out, device=device)
        config = ema_model.config
        model = LatentDecoder(config).to(device)
        model.load_state_dict(load_file(str(out / ONLINE_FILE)))
    else:
        model = LatentDecoder(config).to(device)
    ema = EMA(model, decay=args.ema_decay)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    step, history = 0, []
    if resuming:
        step, history = load_train_state(out, optimizer)
        ema.load_state_dict(ema_model.state_dict(), num_updates=step)
        print(f"resuming {out} at step {step}")
    sched = DDPMScheduler(**config.scheduler_kwargs())
    x_all = model.normalize_latents(data.latents).to(device)  # (N,C,h,w) ~N(0,1)
    emb_all = data.image_emb.to(device)
    n = len(x_all)
    print(
        f"decoder {model.num_params() / 1e6:.2f}M params, {n} images, "
        f"{len(data.states)} captions, latents {tuple(x_all.shape[1:])}, "
        f"{config.prediction_type}, shift {config.latent_shift:.3f} scale {config.latent_scale:.3f}"
    )
    rng = np.random.default_rng(args.seed + step)
    gen = torch.Generator(device=device).manual_seed(args.seed + step)
    grid_rows = np.random.default_rng(1234).choice(n, size=min(8, n), replace=False)
    (out / "samples").mkdir(exist_ok=True)

    def checkpoint() -> None:
        save_component(out, ema.model, config, extra={"step": step, "images": n})
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(out / ONLINE_FILE))  # fmt: skip
        save_train_state(out, optimizer, step, history)
        plot_curves(
            out / "loss.png", history, ["loss", "lr"], f"decoder ({config.prediction_type})"
        )

    loop = Steps(step, args.steps, getattr(args, "max_minutes", None), "train decoder")
    bar, clock = loop.bar, loop.clock
    start_step, window = step, []
    while loop.running(step):
        idx = rng.integers(0, n, size=args.batch_size)
        cap = torch.from_numpy(sample_captions(data.per_image, idx, rng))
        idx_t = torch.from_numpy(idx).to(device)
        mask = data.mask[cap]
        t_len = int(mask.sum(1).max())  # trim padding: cross-attention cost follows T
        states, mask = data.states[cap, :t_len].to(device).float(), mask[:, :t_len].to(device)
        x0 = x_all[idx_t]
        noise = torch.randn(x0.shape, generator=gen, device=device)
        t = torch.randint(0, config.num_train_timesteps, (len(idx),), generator=gen, device=device)
        r = torch.rand(2, len(idx), generator=gen, device=device)
        drop_image, drop_text = r[0] < config.image_drop_prob, r[1] < config.text_drop_prob
        lr = lr_at(step, args.steps, args.lr, args.warmup)  # planned to --steps, not the clock
        set_lr(optimizer, lr)
        model.train()
        pred = model(
            sched.add_noise(x0, noise, t), t, emb_all[idx_t], states, mask, drop_image, drop_text
        )
        loss = F.mse_loss(pred, sched.training_target(x0, noise, t))
        optimizer_step(model, optimizer, loss)
        ema.update(model)
        step += 1
        window.append(loss.item())
        if step % LOG_EVERY == 0 or step == args.steps:
            history.append({"step": step, "loss": float(np.mean(window)), "lr": lr})
            window = []
        bar.update(1)
        bar.set_postfix(loss=f"{window[-1] if window else history[-1]['loss']:.4f}")
        if due(step, args.sample_every, args.steps):
            grid = sample_grid(ema.model, vq, data, grid_rows, device, seed=args.seed)
            png = encode_png(grid, scale=2)
            (out / "samples" / f"step_{step:06d}.png").write_bytes(png)
            (out / "samples.png").write_bytes(png)
        if due(step, args.ckpt_every, args.steps):
            checkpoint()
    bar.close()
    if loop.timed_out or not (out / CONFIG_NAME).is_file():
        grid = sample_grid(ema.model, vq, data, grid_rows, device, seed=args.seed)
        (out / "samples.png").write_bytes(encode_png(grid, scale=2))
        checkpoint()
    elapsed = clock.elapsed()
    done = step - start_step
    last = [h["loss"] for h in history[-10:]]
    summary = {
        "steps": step,
        "seconds": round(elapsed, 1),
        "steps_per_s": round(done / elapsed, 2) if elapsed > 0 and done else None,
        "final_loss": round(float(np.mean(last)), 5) if last else None,
        "first_loss": history[0]["loss"] if history else None,
        "params_m": round(model.num_params() / 1e6, 2),
        "prediction_type": config.prediction_type,
        "latent_shape": list(x_all.shape[1:]),
        "out": str(out),
    }
    write_report(out / "train_summary.json", summary)
    return summary
