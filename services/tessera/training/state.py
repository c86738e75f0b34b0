"""Training state beside a checkpoint: optimizer tensors in safetensors, everything else in
JSON (nothing is pickled), and starting a run from scratch or from that state."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tessera.common.checkpoint import CONFIG_NAME, load_component
from tessera.training.optim import make_optimizer

STATE_JSON = "train_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def optimizer_to_files(
    optimizer: torch.optim.Optimizer, prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors named ``[prefix.]<param id>.<key>``, JSON-able meta:
    param groups and the non-tensor state). A prefix lets several optimizers share a file."""
    sd = optimizer.state_dict()
    head = f"{prefix}." if prefix else ""
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{head}{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    groups = [dict(g) for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str = ""
) -> None:
    """The inverse of ``optimizer_to_files`` (tensors of other prefixes are ignored)."""
    head = f"{prefix}." if prefix else ""
    state: dict[int, dict[str, Any]] = {}
    named = [(n[len(head) :], v) for n, v in tensors.items() if n.startswith(head)]
    for name, value in named + list(meta["scalars"].items()):
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_train_state(out: Path, optimizer: torch.optim.Optimizer, step: int, history: list) -> None:
    """``optimizer.safetensors`` + ``train_state.json`` (step, history, optimizer meta)."""
    tensors, meta = optimizer_to_files(optimizer)
    save_file(tensors, str(Path(out) / OPTIMIZER_FILE))
    state = {"step": step, "history": history, **meta}
    (Path(out) / STATE_JSON).write_text(json.dumps(state) + "\n")


def load_train_state(out: Path, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    """Restore ``optimizer`` from ``out``; returns (step, history)."""
    meta = json.loads((Path(out) / STATE_JSON).read_text())
    optimizer_from_files(optimizer, load_file(str(Path(out) / OPTIMIZER_FILE)), meta)
    return int(meta["step"]), list(meta["history"])


def has_checkpoint(out: Path) -> bool:
    return (Path(out) / STATE_JSON).is_file() and (Path(out) / CONFIG_NAME).is_file()


def start_training(
    out: Path,
    resume: bool,
    build: Callable[[], torch.nn.Module],
    device: torch.device,
    *,
    lr: float,
    weight_decay: float,
) -> tuple[torch.nn.Module, torch.optim.AdamW, int, list]:
    """(model, optimizer, step, history): from ``out``'s checkpoint when resuming from one,
    else ``build()`` at step 0."""
    resuming = resume and has_checkpoint(out)
    model = load_component(out, device=device).train() if resuming else build().to(device)
    optimizer = make_optimizer(model, lr, weight_decay)
    step, history = 0, []
    if resuming:
        step, history = load_train_state(out, optimizer)
        print(f"resuming {out} at step {step}")
    return model, optimizer, step, history
