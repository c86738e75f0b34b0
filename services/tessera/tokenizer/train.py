"""``tessera train tokenizer``: VQ-VAE, then VQ-GAN.

Phase 1 (VQ-VAE): reconstruction (L1 + MSE + multi-scale gradient L1) + codebook/commitment.
Phase 2 (VQ-GAN, from ``--gan-start`` or half-way): a patch discriminator joins, its hinge
loss weighted adaptively (taming-transformers) so its gradient at the decoder's last layer is
``disc_weight`` times the reconstruction's. The model at the switch is kept in ``OUT/vqvae``.

``OUT`` is itself a tokenizer component (``config.json`` + ``model.safetensors``), rewritten
at every checkpoint; ``OUT/train_state`` holds what ``--resume`` needs (discriminator,
optimizer moments in safetensors, step and history in JSON). The learning-rate schedule
follows *progress* = max(step / steps, elapsed / max-minutes), so a wall-clock budget still
ends with a decayed learning rate.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from tessera.common.checkpoint import load_component, read_config, save_component
from tessera.common.errors import InvalidArgument
from tessera.common.images import arrays_to_tensor
from tessera.tokenizer.discriminator import DiscriminatorConfig, PatchDiscriminator
from tessera.tokenizer.eval import monitor
from tessera.tokenizer.losses import (
    ReconstructionWeights,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    reconstruction_loss,
)
from tessera.tokenizer.model import VQConfig, VQModel
from tessera.tokenizer.plots import plot_history
from tessera.tokenizer.trainset import training_images
from tessera.training.cli import add_run_arguments
from tessera.training.components import component_dir
from tessera.training.optim import cosine_decay, optimizer_step
from tessera.training.state import optimizer_from_files, optimizer_to_files

STATE_DIR = "train_state"
PRESETS = {
    "default": {},  # 64x64 -> 8x8, 1024 codes
    "grid16": {"channel_mult": (1, 2)},  # 64x64 -> 16x16
    "tiny": dataclasses.asdict(VQConfig.tiny(image_size=64, channel_mult=(1, 2, 2))),  # 64 -> 8
}


@dataclass
class TrainConfig:
    dataset: str = "twemoji"
    steps: int = 6000
    batch_size: int = 16  # beat 32 at equal wall-clock in a 10-minute trial
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.95)
    disc_lr: float = 3e-4
    warmup: int = 100
    min_lr_frac: float = 0.05
    gan_start: int | None = None  # step; None: when progress reaches gan_start_frac
    gan_start_frac: float = 0.65
    disc_weight: float = 0.2
    use_gan: bool = True
    rec: ReconstructionWeights = field(default_factory=ReconstructionWeights)
    flip: bool = True  # random horizontal flips (emoji read fine mirrored)
    max_minutes: float | None = None
    ckpt_every: int = 250
    log_every: int = 25
    eval_images: int = 128  # held-out images scored at each checkpoint (monitoring only)
    seed: int = 0
    edit_images: list[str] = field(default_factory=list)  # edit sets' scenes, trained on too
    init_from: str | None = None  # a tokenizer component whose weights the run starts from
    decoder_only: bool = False  # encoder and codebook frozen: every image keeps its codes

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["rec"] = ReconstructionWeights(**d.get("rec", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# --- the trainer ---------------------------------------------------------------------------


class Trainer:
    def __init__(
        self, model_cfg: VQConfig, cfg: TrainConfig, out: Path, train_images: np.ndarray,
        eval_images: np.ndarray, disc_cfg: DiscriminatorConfig | None = None,
    ) -> None:  # fmt: skip
        if train_images.shape[1] != model_cfg.image_size:
            raise InvalidArgument(
                f"data is {train_images.shape[1]}px, the model takes {model_cfg.image_size}px"
            )
        self.cfg, self.model_cfg, self.out = cfg, model_cfg, Path(out)
        torch.manual_seed(cfg.seed)
        self.model = VQModel(model_cfg).to(memory_format=torch.channels_last)
        self.disc = PatchDiscriminator(disc_cfg or DiscriminatorConfig())
        self.disc.to(memory_format=torch.channels_last)
        # --decoder-only: every code stays as it was, so the models trained on them stay valid
        self.frozen = (self.model.encoder, self.model.quantizer) if cfg.decoder_only else ()
        for module in self.frozen:
            module.requires_grad_(False)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trained, lr=cfg.lr, betas=tuple(cfg.betas))
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self.data = arrays_to_tensor(train_images).contiguous(memory_format=torch.channels_last)
        self.eval_images = eval_images[: cfg.eval_images]
        self.step, self.elapsed, self.gan_active = 0, 0.0, False
        self.history: list[dict] = []

    # schedule
    def progress(self) -> float:
        p = self.step / max(self.cfg.steps, 1)
        if self.cfg.max_minutes:
            p = max(p, self.elapsed / (60.0 * self.cfg.max_minutes))
        return min(p, 1.0)

    def lr_scale(self) -> float:
        if self.step < self.cfg.warmup:
            return (self.step + 1) / self.cfg.warmup
        return cosine_decay(self.progress(), self.cfg.min_lr_frac)

    def gan_due(self) -> bool:
        if not self.cfg.use_gan:
            return False
        if self.cfg.gan_start is not None:
            return self.step >= self.cfg.gan_start
        return self.progress() >= self.cfg.gan_start_frac

    def batch(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step)
        idx = torch.randint(0, len(self.data), (self.cfg.batch_size,), generator=gen)
        x = self.data[idx]
        if self.cfg.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x.contiguous(memory_format=torch.channels_last)

    def train_step(self) -> dict[str, float]:
        if not self.gan_active and self.gan_due():
            # keep the VQ-VAE at the switch, resumable: `--resume --no-gan` on a copy of it
            # continues the same schedule without the GAN (the same-size baseline)
            self.save(self.out / "vqvae", plot=False)
            self.gan_active = True
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * self.lr_scale()
        for group in self.opt_d.param_groups:  # the discriminator's phase is short: no decay
            group["lr"] = self.cfg.disc_lr
        if self.model_cfg.kind == "gumbel":  # dVAE: anneal the relaxation geometrically
            t0, t1 = self.model_cfg.tau_start, self.model_cfg.tau_end
            self.model.quantizer.temperature = t0 * (t1 / t0) ** self.progress()
        x = self.batch()
        self.model.train()
        for module in self.frozen:  # eval mode: no dead-code restarts either
            module.eval()
        out = self.model(x)
        rec = reconstruction_loss(out.reconstruction, x, self.cfg.rec)
        loss = rec["total"] + out.quantizer_loss
        logs = {k: float(v.detach()) for k, v in rec.items()}
        logs["quant"] = float(out.quantizer_loss.detach())
        if self.gan_active:
            self.disc.requires_grad_(False)
            g_loss = generator_loss(self.disc(out.reconstruction))
            weight = self.cfg.disc_weight * adaptive_weight(
                rec["total"], g_loss, self.model.last_layer
            )
            loss = loss + weight * g_loss
            self.disc.requires_grad_(True)
            logs |= {"g_loss": float(g_loss.detach()), "d_weight": float(weight)}
        optimizer_step(self.model, self.opt, loss)
        if self.gan_active:
            d_loss = hinge_d_loss(self.disc(x), self.disc(out.reconstruction.detach()))
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logs["d_loss"] = float(d_loss.detach())
        logs["lr"] = self.opt.param_groups[0]["lr"]
        if self.model_cfg.kind == "gumbel":
            logs["tau"] = self.model.quantizer.temperature
        self.step += 1
        return logs

    def _extra(self) -> dict:
        return {"step": self.step, "dataset": self.cfg.dataset, "phase": self.phase()}

    def phase(self) -> str:
        if self.model_cfg.kind != "vq":
            return self.model_cfg.kind
        return "vqgan" if self.gan_active else "vqvae"

    # checkpoints
    def save(self, out: Path | None = None, plot: bool = True) -> None:
        out = out or self.out
        self.model.eval()
        save_component(out, self.model, self.model_cfg, extra=self._extra())
        state_dir = out / STATE_DIR
        save_component(state_dir / "discriminator", self.disc, self.disc.config)
        t1, m1 = optimizer_to_files(self.opt, "model")
        t2, m2 = optimizer_to_files(self.opt_d, "disc")
        save_file(t1 | t2, str(state_dir / "optimizers.safetensors"))
        state = {
            "step": self.step, "elapsed_s": self.elapsed, "gan_active": self.gan_active,
            "train_config": dataclasses.asdict(self.cfg), "optimizers": {"model": m1, "disc": m2},
        }  # fmt: skip
        (state_dir / "state.json").write_text(json.dumps(state, indent=1) + "\n")
        (out / "history.json").write_text(json.dumps(self.history) + "\n")
        if plot:
            plot_history(self.history, out / "loss_curves.png")

    def load(self) -> None:
        state_dir = self.out / STATE_DIR
        state = json.loads((state_dir / "state.json").read_text())
        self.model.load_state_dict(load_component(self.out).state_dict())
        self.disc.load_state_dict(load_component(state_dir / "discriminator").state_dict())
        tensors = load_file(str(state_dir / "optimizers.safetensors"))
        optimizer_from_files(self.opt, tensors, state["optimizers"]["model"], "model")
        optimizer_from_files(self.opt_d, tensors, state["optimizers"]["disc"], "disc")
        self.step, self.elapsed = int(state["step"]), float(state["elapsed_s"])
        self.gan_active = bool(state["gan_active"])
        history = self.out / "history.json"
        self.history = json.loads(history.read_text()) if history.is_file() else []
        torch.manual_seed(self.cfg.seed + self.step)

    def evaluate(self) -> dict:
        return monitor(self.model, self.eval_images, self.cfg.dataset, self.out / "samples.png")

    def fit(self, progress: bool = True) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not progress, desc="tokenizer")
        window: list[dict] = []
        last = time.perf_counter()
        try:
            while self.step < self.cfg.steps and self.progress() < 1.0:
                window.append(self.train_step())
                now = time.perf_counter()
                self.elapsed += now - last
                last = now
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps:
                    keys = set().union(*window)
                    row = {k: float(np.mean([w[k] for w in window if k in w])) for k in keys}
                    row |= {"step": self.step, "elapsed_s": round(self.elapsed, 1)}
                    window = []
                    if self.step % self.cfg.ckpt_every == 0:
                        row |= {f"eval_{k}": v for k, v in self.evaluate().items()}
                    self.history.append(row)
                    bar.set_postfix(
                        phase=self.phase(), l1=f"{row['l1']:.4f}",
                        psnr=f"{row.get('eval_psnr_db', float('nan')):.2f}",
                    )  # fmt: skip
                if self.step % self.cfg.ckpt_every == 0:
                    self.save()
                    last = time.perf_counter()  # checkpoint time does not eat the budget
        finally:
            bar.close()
            final = {f"eval_{k}": v for k, v in self.evaluate().items()}
            final |= {"step": self.step, "elapsed_s": round(self.elapsed, 1)}
            self.history.append(final)
            self.save()
        return final


# --- CLI ---------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(
        parser,
        steps=None,
        steps_help="default 6000",
        out_help="tokenizer directory to write",
        dataset="twemoji",
    )
    parser.add_argument("--gan-start", type=int, default=None, help="step the GAN starts")
    parser.add_argument("--no-gan", action="store_true", help="VQ-VAE only (baseline)")
    parser.add_argument(
        "--init-from", type=Path, default=None,
        help="start from this tokenizer's weights and config (a component dir or a bundle); "
        "the preset and architecture flags are then ignored",
    )  # fmt: skip
    parser.add_argument(
        "--decoder-only", action="store_true",
        help="with --init-from: train the decoder alone; every code stays as it is",
    )  # fmt: skip
    parser.add_argument(
        "--edit-images", nargs="+", default=None, metavar="EDIT_SET",
        help="also train on these edit sets' training images (sources and targets), e.g. "
        "edits-shapes: scenes of several shapes; their held-out images join the monitor",
    )  # fmt: skip
    parser.add_argument(
        "--kind", choices=["vq", "gumbel", "kl", "vae"], default="vq",
        help="bottleneck: vq (VQ-VAE/GAN), gumbel (dVAE), kl (KL autoencoder), vae (kl at KL "
        "weight 1); only vq has a GAN phase",
    )  # fmt: skip
    parser.add_argument(
        "--local-encoder", action="store_true",
        help="each cell's code from its own patch only; also on top of --init-from",
    )  # fmt: skip
    parser.add_argument("--kl-weight", type=float, default=None, help="gumbel / kl")
    parser.add_argument(
        "--usage-weight", type=float, default=None,
        help="gumbel: weight of KL(the batch's code distribution || uniform); default 0",
    )  # fmt: skip
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--quantizer", choices=["l2", "ema", "fsq"], default=None)
    parser.add_argument("--codebook-size", type=int, default=None)
    parser.add_argument("--fsq-levels", type=str, default=None, help="fsq, e.g. 8,8,8,6,5")
    parser.add_argument("--channels", type=int, default=None, help="first-level width")
    parser.add_argument("--channel-mult", type=str, default=None, help="e.g. 1,2,4")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--disc-weight", type=float, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    parser.add_argument("--ckpt-every", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-progress", action="store_true")


def _train_config(args: argparse.Namespace, base: TrainConfig) -> TrainConfig:
    overrides = {
        "dataset": args.dataset, "steps": args.steps, "gan_start": args.gan_start,
        "batch_size": args.batch_size, "lr": args.lr, "disc_weight": args.disc_weight,
        "max_minutes": args.max_minutes, "ckpt_every": args.ckpt_every, "seed": args.seed,
        "edit_images": args.edit_images,
        "init_from": str(args.init_from) if args.init_from else None,
        "decoder_only": args.decoder_only or None,
    }  # fmt: skip
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_gan or args.kind != "vq":
        cfg.use_gan = False
    return cfg


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out: Path = args.out
    resuming = args.resume and (out / STATE_DIR / "state.json").is_file()
    if resuming:
        state = json.loads((out / STATE_DIR / "state.json").read_text())
        cfg = _train_config(args, TrainConfig.from_dict(state["train_config"]))
        meta = read_config(out)
        model_cfg = VQConfig.from_dict(meta)
    elif args.init_from:
        cfg = _train_config(args, TrainConfig())
        model_cfg = VQConfig.from_dict(read_config(component_dir(args.init_from, "tokenizer")))
    else:
        cfg = _train_config(args, TrainConfig())
        ints = {k: getattr(args, k) for k in ("fsq_levels", "channel_mult")}  # "8,5,5,5"
        flags = {k: getattr(args, k) for k in ("quantizer", "codebook_size", "channels")}
        flags |= {k: tuple(int(v) for v in s.split(",")) for k, s in ints.items() if s}
        preset = dict(PRESETS[args.preset]) | {k: v for k, v in flags.items() if v}
        preset["kind"] = "kl" if args.kind == "vae" else args.kind
        if args.kl_weight is not None or args.kind == "vae":
            preset["kl_weight"] = 1.0 if args.kl_weight is None else args.kl_weight
        if args.usage_weight is not None:
            if args.kind != "gumbel":
                raise SystemExit("--usage-weight is for --kind gumbel")
            preset["usage_weight"] = args.usage_weight
        model_cfg = VQConfig(**preset)
    if args.local_encoder and not resuming:
        model_cfg = dataclasses.replace(model_cfg, local_encoder=True)
    same_codes = cfg.init_from and model_cfg.kind == "vq" and (resuming or not args.local_encoder)
    if cfg.decoder_only and not same_codes:  # a new encoder, or none, would change the codes
        raise SystemExit("--decoder-only needs --init-from a vq tokenizer, as it is")
    train_images, eval_images = training_images(cfg.dataset, cfg.edit_images, args.data_dir)
    trainer = Trainer(model_cfg, cfg, out, train_images, eval_images)
    if resuming:
        trainer.load()
    elif args.init_from:
        start = load_component(component_dir(args.init_from, "tokenizer"))
        trainer.model.load_state_dict(start.state_dict())
    n_params = sum(p.numel() for p in trainer.model.parameters())
    print(
        f"tokenizer: {n_params / 1e6:.2f}M params, {model_cfg.image_size}px -> "
        f"{model_cfg.grid_size}x{model_cfg.grid_size} x {trainer.model.codebook_size or 'no'} "
        f"codes ({model_cfg.kind if model_cfg.kind != 'vq' else model_cfg.quantizer}); "
        f"{len(train_images)} train images ({cfg.dataset}"
        f"{''.join(' + ' + e for e in cfg.edit_images)}); "
        f"{'resuming at step ' + str(trainer.step) if resuming else ''}"
        f"{'' if resuming else 'from ' + (cfg.init_from or 'scratch')}"
    )
    final = trainer.fit(progress=not args.no_progress)
    print(
        f"done at step {final['step']} ({final['elapsed_s'] / 60:.1f} min): held-out sample "
        f"PSNR {final['eval_psnr_db']:.2f} dB, usage {final.get('eval_usage_pct', 0):.1f}%"
        f"{' (no codes)' if 'eval_usage_pct' not in final else ''}; "
        f"wrote {out} (curves: {out / 'loss_curves.png'})"
    )
    return 0
