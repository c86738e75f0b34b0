"""Finding the trained components a trainer or an evaluation reads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tessera.common.checkpoint import CONFIG_NAME, INDEX_NAME, load_component, verify_component
from tessera.common.errors import NotFound


def component_dir(directory: Path, component: str) -> Path:
    """A component's own directory, given it, a bundle (checksums verified) or a parent."""
    directory = Path(directory)
    if (directory / CONFIG_NAME).is_file():
        return directory
    if (directory / INDEX_NAME).is_file():
        return verify_component(directory, component)
    if (directory / component / CONFIG_NAME).is_file():
        return directory / component
    raise NotFound(f"no {component} checkpoint in {directory} (train it with `tessera train`)")


def load_any(directory: Path, component: str, device: torch.device | str = "cpu") -> nn.Module:
    """A component from its own directory, or from a bundle (``model_index.json``) or a folder
    holding ``<component>/``."""
    return load_component(component_dir(directory, component), device=device)
