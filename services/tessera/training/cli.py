"""The command-line arguments and the start of ``run`` that the train and eval commands share.

Each command states its own arguments and calls these for the common ones; the defaults that
differ between commands (steps, batch size, learning rate, threads, ...) are theirs to pass.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tessera.common.device import pick_device
from tessera.training.state import has_checkpoint, start_training

DATASETS = ("twemoji", "shapes")
THREADS_HELP = "torch threads (1 is fastest on a busy machine)"


def add_dataset_arguments(
    parser: argparse.ArgumentParser, *, split: bool = False, default: str | None = None
) -> None:
    """``--dataset`` (required unless given a default) and, with ``split``, ``--split``."""
    if default is None:
        parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    else:
        parser.add_argument("--dataset", choices=list(DATASETS), default=default)
    if split:
        parser.add_argument("--split", choices=["heldout", "train", "all"], default="heldout")


def add_run_arguments(
    parser: argparse.ArgumentParser,
    *,
    steps: int | None,
    inputs: dict[str, str] | None = None,
    out_help: str = "checkpoint directory",
    steps_help: str = "total optimiser steps",
    dataset: str | None = None,
) -> None:
    """``--dataset``, one required path per checkpoint the trainer reads (``inputs``: flag ->
    help), ``--out``, ``--steps`` and ``--resume``."""
    add_dataset_arguments(parser, default=dataset)
    for flag, help_text in (inputs or {}).items():
        parser.add_argument(flag, type=Path, required=True, help=help_text)
    parser.add_argument("--out", type=Path, required=True, help=out_help)
    parser.add_argument("--steps", type=int, default=steps, help=steps_help)
    parser.add_argument("--resume", action="store_true", help="continue from --out")


def add_optimizer_arguments(
    parser: argparse.ArgumentParser,
    *,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
) -> None:
    """``--batch-size``, ``--lr``, ``--weight-decay``, ``--warmup`` (steps)."""
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--weight-decay", type=float, default=weight_decay)
    parser.add_argument("--warmup", type=int, default=warmup)


def add_cadence_arguments(
    parser: argparse.ArgumentParser, *, every: int, monitor: str = "--eval-every"
) -> None:
    """``--ckpt-every`` and the monitoring cadence (``--eval-every`` or ``monitor``)."""
    parser.add_argument("--ckpt-every", type=int, default=every)
    parser.add_argument(monitor, type=int, default=every)


def add_runtime_arguments(
    parser: argparse.ArgumentParser, *, threads: int, training: bool = True
) -> None:
    """``--data-dir``, ``--device``, ``--threads``; for training also ``--seed`` and
    ``--max-minutes``."""
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=threads, help=THREADS_HELP)
    if training:
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--max-minutes", type=float, default=None, help="stop (and checkpoint) after this long"
        )


def add_training_arguments(
    parser: argparse.ArgumentParser,
    *,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    every: int,
    threads: int,
    monitor: str = "--eval-every",
) -> None:
    """What every trainer takes after its own arguments: the optimizer's
    (``add_optimizer_arguments``), the cadences (``add_cadence_arguments``) and the runtime's
    (``add_runtime_arguments``)."""
    add_optimizer_arguments(
        parser, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup
    )
    add_cadence_arguments(parser, every=every, monitor=monitor)
    add_runtime_arguments(parser, threads=threads)


def start_command(args: argparse.Namespace) -> torch.device:
    """Set torch's thread count from ``--threads``; the device ``--device`` names (or the
    best one present)."""
    torch.set_num_threads(args.threads)
    return pick_device(args.device)


def refuses_overwrite(out: Path, resume: bool) -> bool:
    """True, after saying so, when ``out`` holds a checkpoint and ``--resume`` was not given."""
    if has_checkpoint(out) and not resume:
        print(f"{out} already holds a checkpoint: pass --resume or choose another --out")
        return True
    return False


def training_run(
    body: Callable[[argparse.Namespace, torch.device, Path], int],
) -> Callable[[argparse.Namespace], int]:
    """A trainer's ``run(args)``: ``start_command``, then ``body(args, device, --out)``; 2,
    after saying why, when ``--out`` holds a checkpoint and ``--resume`` was not given."""

    @functools.wraps(body)
    def run(args: argparse.Namespace) -> int:
        device = start_command(args)
        out = Path(args.out)
        return 2 if refuses_overwrite(out, args.resume) else body(args, device, out)

    return run


def start_model(
    args: argparse.Namespace, out: Path, build: Callable[[], nn.Module], device: torch.device
) -> tuple[nn.Module, torch.optim.AdamW, int, list]:
    """(model, optimizer, step, history) from ``out`` with ``--resume``, else ``build()``;
    AdamW with ``--lr`` and ``--weight-decay`` (``state.start_training``)."""
    return start_training(
        out, args.resume, build, device, lr=args.lr, weight_decay=args.weight_decay
    )
