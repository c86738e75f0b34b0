"""Arrays computed once per input and kept under the data directory's ``cache/``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def cached_array(path: Path, compute: Callable[[], np.ndarray], rows: int) -> np.ndarray:
    """``path``'s array when it holds ``rows`` rows, else ``compute()`` saved there. The save
    goes through a temporary name, so a killed run never leaves a torn file under the real
    one; a torn or stale file is computed again."""
    path = Path(path)
    if path.is_file():
        try:
            array = np.load(path, allow_pickle=False)
            if array.shape[0] == rows:
                return array
        except (OSError, ValueError):
            pass  # torn: compute again
    array = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)
    return array
