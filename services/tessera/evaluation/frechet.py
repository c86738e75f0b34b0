"""Fréchet distance between two feature sets (FID's formula, in the judge's feature space).

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)

computed with symmetric eigendecompositions in float64 (no scipy). The number depends on the
sample size, so a report always shows it beside the real-vs-real floor at the same size.
"""

from __future__ import annotations

import numpy as np


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """a (N,F), b (M,F) feature rows -> the Fréchet distance of their Gaussian fits."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need (N,F) and (M,F) with N, M >= 2; got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _sqrt_psd(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    fd = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(max(fd, 0.0))


def real_floor(
    real: np.ndarray, size: int, rng: np.random.Generator, repeats: int = 3
) -> float | None:
    """Mean FD between two disjoint random draws of ``size`` real rows (None if too few)."""
    if 2 * size > len(real):
        size = len(real) // 2
    if size < 2:
        return None
    values = []
    for _ in range(repeats):
        perm = rng.permutation(len(real))
        values.append(frechet_distance(real[perm[:size]], real[perm[size : 2 * size]]))
    return float(np.mean(values))
