"""JSON reports of training and evaluation runs, with paths the reader's clone can resolve.

Reports are committed beside the bundle (``models/<name>/eval/...``): a path inside the
repository is written relative to its root, so the file does not record the directory of the
machine that ran the command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tessera.common.settings import REPO_ROOT


def repo_relative(value: Any) -> Any:
    """``value`` with every string that is a path under the repository made relative to it
    (dicts and lists walked; anything else returned as it is)."""
    if isinstance(value, dict):
        return {k: repo_relative(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [repo_relative(v) for v in value]
    if isinstance(value, Path):
        value = str(value.resolve())
    if isinstance(value, str) and value.startswith(f"{REPO_ROOT}/"):
        return value[len(str(REPO_ROOT)) + 1 :]
    return value


def write_report(path: Path, report: dict, *, indent: int | None = 2) -> None:
    """Write ``report`` as JSON at ``path``, repository paths made relative."""
    Path(path).write_text(json.dumps(repo_relative(report), indent=indent) + "\n")
