"""Checkpoints: one directory per component (``config.json`` + ``model.safetensors``) and a
bundle index (``model_index.json``, after diffusers) naming the components with checksums.

Weights are only ever read with safetensors: nothing here unpickles.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tessera import registry
from tessera.common.errors import ModelNotReady

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model_index.json"
# Files a component may have besides its config and weights, checksummed when present: the
# mixed model's text BPE (JSON, the `tokenizers` library's format).
EXTRA_FILES = ("tokenizer.json",)
COMPONENTS = registry.components()  # every component some registered service loads
IMPORT_HINT = "the library files changed since the import; run `tessera models import` again"
REBUILD_HINT = "rebuild it with `tessera models init` (random weights) or `tessera train all`"


def class_path(obj: type) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def import_class(path: str) -> type:
    module, _, name = path.partition(":")
    if not module.startswith("tessera."):
        raise ModelNotReady(f"refusing to import {path!r}: only tessera classes load")
    return getattr(importlib.import_module(module), name)


def save_component(
    directory: Path, model: nn.Module, config: Any, *, half: bool = False, extra: dict | None = None
) -> Path:
    """Write ``config.json`` and ``model.safetensors`` for one component."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"_class_name": class_path(type(model)), **dataclasses.asdict(config)}
    if extra:
        meta["_extra"] = extra
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor
    # safetensors refuses shared storage; clone breaks ties (e.g. tied embeddings).
    save_file({k: v.clone() for k, v in state.items()}, str(directory / WEIGHTS_NAME))
    return directory


def read_config(directory: Path) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelNotReady(f"missing {path}; {REBUILD_HINT}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelNotReady(f"corrupt {path}: {e}; {REBUILD_HINT}") from e


def load_component(directory: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Build the component's model class from its config and load its weights (strict)."""
    meta = read_config(directory)
    model_cls = import_class(meta.pop("_class_name"))
    if "_format" in meta:  # an imported library component: its adapter loads it
        # every adapter's ``from_import(directory, meta, device)`` returns the component on
        # ``device`` in eval mode and in the dtype it serves in (Janus: bf16 on CUDA with its
        # rotary angles kept in float32; Kandinsky: ``hf_weights.to_serving``, fp16 on CUDA)
        return model_cls.from_import(Path(directory), meta, device)
    meta.pop("_extra", None)
    config_cls = model_cls.config_class  # every Tessera model names its config dataclass
    fields = {f.name for f in dataclasses.fields(config_cls)}
    config = config_cls(**{k: v for k, v in meta.items() if k in fields})
    model = model_cls(config)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelNotReady(f"missing {weights}; {REBUILD_HINT}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises several types for truncated files
        raise ModelNotReady(f"corrupt {weights}: {e}; {REBUILD_HINT}") from e
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bundle_index(bundle_dir: Path, name: str, training: dict | None = None) -> dict:
    """Write ``model_index.json`` naming every component directory present, with checksums."""
    bundle_dir = Path(bundle_dir)
    components = {}
    for component in COMPONENTS:
        cdir = bundle_dir / component
        if not (cdir / CONFIG_NAME).is_file():
            continue
        meta = read_config(cdir)
        components[component] = {
            "class": meta["_class_name"],
            "files": {
                fname: file_sha256(cdir / fname)
                for fname in (CONFIG_NAME, WEIGHTS_NAME, *EXTRA_FILES)
                if fname in (CONFIG_NAME, WEIGHTS_NAME) or (cdir / fname).is_file()
            },
        }
    index = {
        "_class_name": "TesseraBundle",
        "name": name,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "components": components,
        "training": training or {},
    }
    (bundle_dir / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def read_bundle_index(bundle_dir: Path) -> dict:
    path = Path(bundle_dir) / INDEX_NAME
    if not path.is_file():
        raise ModelNotReady(
            f"no model bundle at {bundle_dir} (missing {INDEX_NAME}); {REBUILD_HINT}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelNotReady(f"corrupt {path}: {e}; {REBUILD_HINT}") from e


def verify_component(bundle_dir: Path, component: str) -> Path:
    """Check one component's files against the index checksums; return its directory."""
    index = read_bundle_index(bundle_dir)
    entry = index["components"].get(component)
    if entry is None:
        raise ModelNotReady(f"bundle {bundle_dir} has no {component!r} component; {REBUILD_HINT}")
    cdir = Path(bundle_dir) / component
    _verify_files(cdir, entry["files"], REBUILD_HINT)
    external = entry.get("external")  # an imported component: the library files it reads
    if external:
        _verify_files(Path(external["root"]), external["files"], IMPORT_HINT)
    return cdir


def _verify_files(root: Path, files: dict[str, str], hint: str) -> None:
    """ModelNotReady (with ``hint``) unless every file ``root / name`` has its checksum."""
    for name, expected in files.items():
        path = root / name
        if not path.is_file():
            raise ModelNotReady(f"missing {path}; {hint}")
        if file_sha256(path) != expected:
            raise ModelNotReady(f"checksum mismatch for {path}; {hint}")


def component_format(bundle_dir: Path, component: str) -> str:
    """The layout a component's weights are in: ``tessera`` for a bundle Tessera wrote, else
    the imported library format (e.g. ``diffusers-kandinsky22``)."""
    entry = read_bundle_index(bundle_dir)["components"].get(component) or {}
    return entry.get("format", "tessera")


def reranks_ar(bundle_dir: str | Path) -> bool:
    """Whether the bundle's ar route reranks candidates by CLIP (in the Detokenizer, from the
    LM's MiniLM states): it has an LM and a CLIP, both in Tessera's own format."""
    bundle_dir = Path(bundle_dir)
    comps = read_bundle_index(bundle_dir)["components"]
    return all(c in comps and component_format(bundle_dir, c) == "tessera" for c in ("lm", "clip"))


def load_bundle_component(
    bundle_dir: Path, component: str, device: str | torch.device = "cpu"
) -> nn.Module:
    """Verify and load one component of a bundle."""
    return load_component(verify_component(bundle_dir, component), device=device)
