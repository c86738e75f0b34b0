"""What every family's import shares: reading the library's JSON, checksumming the weight
files it points at, and writing the Tessera bundle index.

An imported bundle is a Tessera bundle directory whose components hold no weights of their
own: ``<component>/config.json`` names the adapter class (``_class_name``, a Tessera class)
and the library layout (``_format``), and the index entry of each component records
``format``, the component's own files with checksums, and ``external``: the absolute
``root`` of the library directory and the SHA-256 of every file the adapter reads there.
``tessera.common.checkpoint.verify_component`` checks both sets before a deployment loads.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from tessera.common.checkpoint import CONFIG_NAME, INDEX_NAME, file_sha256
from tessera.imports.errors import ImportRefused

_BLOB = re.compile(r"^[0-9a-f]{64}$")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from the library directory, or ImportRefused naming ``what``."""
    if not path.is_file():
        raise ImportRefused(f"missing {what}: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ImportRefused(f"corrupt {what} {path}: {e}") from e
    if not isinstance(data, dict):
        raise ImportRefused(f"corrupt {what} {path}: not a JSON object")
    return data


def checksum(path: Path) -> str:
    """SHA-256 of one file. In a Hugging Face cache snapshot a weight file is a link to
    ``blobs/<sha256>``: a blob whose content does not hash to its name is refused."""
    digest = file_sha256(path)
    if path.is_symlink():
        name = path.resolve().name
        if _BLOB.match(name) and name != digest:
            raise ImportRefused(
                f"checksum mismatch: {path} links to blob {name} but its content hashes to {digest}"
            )
    return digest


def check_safetensors(path: Path) -> list[str]:
    """The tensor names of a readable safetensors file, or ImportRefused."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises several types for a bad header
        raise ImportRefused(f"corrupt weights {path}: {e}") from e


@dataclass
class ImportedComponent:
    """One bundle component: the adapter's config (written as ``<name>/config.json``), the
    library directory it reads (``root``) and the files there it depends on (``files``,
    relative to root), plus files written into the component directory (``own_files``)."""

    config: dict
    root: Path
    files: list[str]
    own_files: list[str] = field(default_factory=list)


def write_index(
    dst: Path, name: str, family: str, components: dict[str, ImportedComponent]
) -> dict:
    """Write each component's config and ``model_index.json`` with every checksum."""
    dst.mkdir(parents=True, exist_ok=True)
    entries = {}
    for cname, comp in components.items():
        cdir = dst / cname
        cdir.mkdir(exist_ok=True)
        (cdir / CONFIG_NAME).write_text(json.dumps(comp.config, indent=2, sort_keys=True) + "\n")
        root = comp.root.resolve()
        entries[cname] = {
            "class": comp.config["_class_name"],
            "format": comp.config["_format"],
            "files": {f: file_sha256(cdir / f) for f in (CONFIG_NAME, *comp.own_files)},
            "external": {
                "root": str(root),
                "files": {rel: checksum(comp.root / rel) for rel in sorted(comp.files)},
            },
        }
    index = {
        "_class_name": "TesseraBundle",
        "name": name,
        "family": family,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "components": entries,
        "training": {},
    }
    (dst / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index
