"""The tokenizer trainer's curves (``loss_curves.png``)."""

from __future__ import annotations

from pathlib import Path

from tessera.training.plots import pyplot


def plot_history(history: list[dict], path: Path) -> None:
    plt = pyplot()

    panels = [
        ("reconstruction", ["l1", "mse", "grad"]),
        ("codebook or KL / GAN", ["quant", "g_loss", "d_loss"]),
        ("held-out PSNR (dB)", ["eval_psnr_db"]),
        ("held-out codebook usage (%)", ["eval_usage_pct"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            pts = [(h["step"], h[key]) for h in history if key in h]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, label=key, marker="." if key.startswith("eval") else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        if title == "reconstruction":
            ax.set_yscale("log")
        if ax.get_lines():
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
