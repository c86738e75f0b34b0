"""Render the Tessera Grafana dashboard's panels from a live Prometheus into one PNG.

    python scripts/render_dashboard.py --prometheus http://127.0.0.1:9090 --minutes 15
    python scripts/render_dashboard.py --no-gpu --out docs/monitoring/dashboard.png

Every panel of deploy/grafana/dashboards/tessera.json becomes a small line plot titled like
the panel: each target runs as a Prometheus range query over the last ``--minutes`` (Grafana's
``$__rate_interval`` replaced by ``--rate-interval``) and each returned series is a line,
named by the target's ``legendFormat``. Stat and bar-gauge panels are drawn as lines too. A
panel with no data says so. No Grafana is needed: this is the picture for docs and reviews.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "tessera.json"
OUT = ROOT / "docs" / "monitoring" / "dashboard.png"
COLUMNS = 4
MAX_LINES = 16  # series drawn per panel; more would be unreadable at this size

sys.path.insert(0, str(ROOT / "services"))
from tessera.common.metrics import DashboardQuery, dashboard_targets  # noqa: E402

# How a panel's unit scales its values and labels its axis.
UNITS = {
    "percentunit": (100.0, "%"),
    "percent": (1.0, "%"),
    "s": (1.0, "seconds"),
    "reqps": (1.0, "requests/s"),
}


def legends(path: Path) -> dict[tuple[str, str], str]:
    """(panel title, refId) → the target's legendFormat."""
    board = json.loads(path.read_text())
    found: dict[tuple[str, str], str] = {}

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                key = (panel.get("title", ""), target.get("refId", ""))
                found[key] = target.get("legendFormat", "")
            walk(panel.get("panels", []))

    walk(board.get("panels", []))
    return found


def units(path: Path) -> dict[str, str]:
    board = json.loads(path.read_text())
    return {
        p.get("title", ""): p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for p in board.get("panels", [])
    }


def legend_name(fmt: str, labels: dict[str, str]) -> str:
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip()
    return " ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"


def query_range(
    client: httpx.Client, expr: str, start: float, end: float, step: float
) -> list[dict]:
    params = {"query": expr, "start": start, "end": end, "step": step}
    r = client.get("/api/v1/query_range", params=params)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body.get('error', r.text)}")
    return body["data"]["result"]


def render(
    prometheus: str,
    out: Path = OUT,
    *,
    dashboard: Path = DASHBOARD,
    minutes: float = 15,
    step_s: float | None = None,
    rate_interval: str = "1m",
    include_gpu: bool = True,
    title: str = "Tessera",
) -> Path:
    """Draw every panel of ``dashboard`` from ``prometheus`` into ``out``; returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    targets = [
        t
        for t in dashboard_targets(dashboard, rate_interval=rate_interval)
        if include_gpu or not t.needs_gpu
    ]
    panels: dict[str, list[DashboardQuery]] = {}
    for t in targets:
        panels.setdefault(t.panel, []).append(t)
    fmt, unit_of = legends(dashboard), units(dashboard)
    end = time.time()
    start = end - minutes * 60
    step = step_s or max(1.0, minutes * 60 / 300)

    rows = math.ceil(len(panels) / COLUMNS)
    fig, axes = plt.subplots(rows, COLUMNS, figsize=(4.6 * COLUMNS, 2.9 * rows), squeeze=False)
    with httpx.Client(base_url=prometheus, timeout=30) as client:
        for ax, (name, queries) in zip(axes.flat, panels.items(), strict=False):
            scale, ylabel = UNITS.get(unit_of.get(name, ""), (1.0, ""))
            lines = 0
            for q in queries:
                for series in query_range(client, q.expr, start, end, step):
                    if lines >= MAX_LINES:
                        break
                    xs = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
                    ys = [float(v) * scale for _, v in series["values"]]
                    label = legend_name(fmt.get((q.panel, q.ref_id), ""), series["metric"])
                    ax.plot(xs, ys, linewidth=1.2, label=label)
                    lines += 1
            ax.set_title(name, fontsize=9, loc="left")
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=5))
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
            ax.set_xlim(datetime.fromtimestamp(start), datetime.fromtimestamp(end))
            ax.grid(alpha=0.3)
            if ylabel:
                ax.set_ylabel(ylabel, fontsize=7)
            if lines == 0:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            elif lines > 1 or ax.get_legend_handles_labels()[1][0] not in ("", "value"):
                ax.legend(fontsize=6, loc="upper left", ncol=2 if lines > 4 else 1)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    when = datetime.fromtimestamp(end).strftime("%Y-%m-%d %H:%M")
    fig.suptitle(f"{title} dashboard: {minutes:.1f} minutes to {when}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--minutes", type=float, default=15, help="time range to draw")
    parser.add_argument("--step", type=float, default=None, help="seconds between points")
    parser.add_argument("--rate-interval", default="1m", help="replaces $__rate_interval")
    parser.add_argument("--no-gpu", action="store_true", help="leave out the GPU panels")
    args = parser.parse_args(argv)
    out = render(
        args.prometheus,
        args.out,
        dashboard=args.dashboard,
        minutes=args.minutes,
        step_s=args.step,
        rate_interval=args.rate_interval,
        include_gpu=not args.no_gpu,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
