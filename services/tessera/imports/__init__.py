"""``tessera models import DIR``: turn a published model family's local directory (in its
library's own layout) into a Tessera bundle whose components point at the original weights,
with checksums.

Each family is a module ``tessera.imports.<family>`` with ``detect(src) -> bool`` and
``write_bundle(src, dst) -> Path``; both raise ``ImportRefused`` for a bad or partial
directory. Family modules are imported by name, lazily, so one missing module leaves the
others working.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from tessera.imports.errors import ImportRefused

FAMILIES = ("kandinsky", "janus")

__all__ = ["FAMILIES", "ImportRefused", "family_module", "import_directory"]


def family_module(family: str) -> ModuleType | None:
    """``tessera.imports.<family>``, or None where this tree has no such module."""
    name = f"tessera.imports.{family}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name == name:
            return None
        raise


def import_directory(src: Path, dst: Path) -> Path:
    """Detect ``src``'s family and write its bundle at ``dst``; the bundle directory."""
    src = Path(src)
    if not src.is_dir():
        raise ImportRefused(f"{src} is not a directory")
    known = []
    for family in FAMILIES:
        module = family_module(family)
        if module is None:
            continue
        known.append(family)
        if module.detect(src):
            return module.write_bundle(src, Path(dst))
    raise ImportRefused(
        f"{src} is no model directory Tessera can import (known families: {', '.join(known)}); "
        "expected a diffusers Kandinsky 2.2 prior + decoder pair (model_index.json of "
        "KandinskyV22PriorPipeline and KandinskyV22Pipeline) or a transformers Janus directory"
    )
