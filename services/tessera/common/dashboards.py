"""The Prometheus queries of a Grafana dashboard JSON, ready to run.

Used by the deploy tests: every panel query must parse (promtool) and name metrics that the
running stack exports. Grafana's interval variables are substituted so that Prometheus can
run a panel query as is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_VAR_NAMES = "(?:rate_interval|interval|range)"
_GRAFANA_VARS = re.compile(rf"\$\{{__{_VAR_NAMES}\}}|\$__{_VAR_NAMES}\b")
_GPU_METRIC = re.compile(r"\bray_node_(gpus?|gram)_")


@dataclass(frozen=True)
class DashboardQuery:
    panel: str
    ref_id: str
    expr: str

    @property
    def needs_gpu(self) -> bool:
        """True when the query reads GPU metrics (which CPU-only nodes do not export)."""
        return bool(_GPU_METRIC.search(self.expr))


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows nest their panels


def dashboard_targets(path: str | Path, *, rate_interval: str = "1m") -> list[DashboardQuery]:
    """Every Prometheus query of a Grafana dashboard JSON, Grafana variables substituted."""
    board = json.loads(Path(path).read_text())
    found = []
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr:
                expr = _GRAFANA_VARS.sub(rate_interval, expr)
                found.append(DashboardQuery(panel.get("title", ""), target.get("refId", ""), expr))
    return found


def dashboard_queries(
    path: str | Path, *, rate_interval: str = "1m", include_gpu: bool = True
) -> list[str]:
    """The PromQL of every panel target; ``include_gpu=False`` drops GPU-only queries."""
    return [
        q.expr
        for q in dashboard_targets(path, rate_interval=rate_interval)
        if include_gpu or not q.needs_gpu
    ]
