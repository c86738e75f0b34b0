"""Loss curves as PNGs, for people."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (imported when first drawn: the
    commands that draw nothing do not pay for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(
    path: Path, history: list[dict], panels: list[str | tuple[str, ...]], title: str
) -> None:
    """One panel per entry of ``panels``: a history key, or a tuple of keys drawn together
    (e.g. a metric beside its baseline). ``history`` is a list of {"step": .., key: ..}."""
    plt = pyplot()

    groups = [(p,) if isinstance(p, str) else tuple(p) for p in panels]
    groups = [g for g in groups if any(k in h for h in history for k in g)]
    if not groups:
        return
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, keys in zip(axes[0], groups, strict=True):
        for key in keys:
            pts = [(h["step"], h[key]) for h in history if key in h]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, lw=1, label=key)
        if len(keys) > 1:
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(" vs ".join(keys) if len(keys) < 3 else keys[0])
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
