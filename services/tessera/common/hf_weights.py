"""Reading a transformers snapshot's safetensors weights without transformers' loader: the
file list (one ``model.safetensors`` or the shards its index names), the tensors' names and
shapes from the headers, and loading one prefix of them into a module built on the meta
device (no random init, no second copy). Nothing is unpickled."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

SINGLE = "model.safetensors"
SHARDED = "model.safetensors.index.json"


def weight_files(src: Path) -> list[Path]:
    """The safetensors files of a snapshot; FileNotFoundError naming what is missing."""
    src = Path(src)
    if (src / SINGLE).is_file():
        return [src / SINGLE]
    index = src / SHARDED
    if not index.is_file():
        found = sorted(p.name for p in src.glob("*.bin")) or ["nothing"]
        raise FileNotFoundError(
            f"no {SINGLE} or {SHARDED} in {src} (found {', '.join(found)}); only safetensors "
            "weights are served"
        )
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    missing = [name for name in shards if not (src / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{SHARDED} names shards missing from {src}: {missing}")
    return [src / name for name in shards]


def to_serving(model: nn.Module, device: torch.device | str) -> nn.Module:
    """A library component as it serves when its weights come in float32: on ``device``, in
    eval mode, halved on CUDA."""
    model = model.to(device).eval()
    return model.half() if torch.device(device).type == "cuda" else model


def tensor_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Every tensor's name and shape, read from the files' headers only."""
    shapes = {}
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def on_meta(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with every parameter on the meta device: shapes without memory."""
    with torch.device("meta"):
        return build()


def expected_shapes(module: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    """The checkpoint names and shapes ``module`` loads from under ``prefix``."""
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_tensors(module: nn.Module, prefix: str, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """What is wrong between ``module`` (under ``prefix``) and the checkpoint's ``shapes``:
    missing tensors and shape mismatches, as sentences (empty: it loads)."""
    problems = []
    want = expected_shapes(module, prefix)
    missing = sorted(set(want) - set(shapes))
    if missing:
        problems.append(f"{len(missing)} tensors missing, e.g. {missing[0]}")
    for name, shape in want.items():
        if name in shapes and shapes[name] != shape:
            problems.append(
                f"{name} is {list(shapes[name])} in the weights, {list(shape)} by the config"
            )
    return problems


def load_prefixed(
    module: nn.Module,
    files: list[Path],
    prefix: str,
    device: torch.device,
    dtype: torch.dtype,
) -> nn.Module:
    """Load the tensors under ``prefix`` into ``module`` (built ``on_meta``), strictly, as
    ``dtype`` on ``device``."""
    wanted = set(expected_shapes(module, prefix))
    state = {}
    for path in files:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for name in f.keys():
                if name in wanted:
                    tensor = f.get_tensor(name)
                    if tensor.is_floating_point():
                        tensor = tensor.to(dtype)
                    state[name[len(prefix) :]] = tensor
    module.load_state_dict(state, strict=True, assign=True)
    return module
