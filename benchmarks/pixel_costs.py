"""`make pixel-bench`: the sequence-length table, pixel (Image Transformer over sub-pixels) vs
ar (LM over VQ tokens), measured in one run and projected (``tessera.pixel.costs``).

Writes ``benchmarks/results/pixel_sequence_length.{json,md}``. ``--from-eval`` renders the
table an eval run measured (``tessera eval pixel`` writes the same ``costs`` into the
bundle's ``eval/pixel/metrics.json``) instead of measuring again.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tessera.pixel.costs import cost_table, render_table
from tessera.training.reports import write_report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("models/shapes"))
    parser.add_argument("--from-eval", type=Path, default=None, help="an eval's metrics.json")
    args = parser.parse_args(argv)
    if args.from_eval:
        metrics = json.loads(args.from_eval.read_text())
        costs, source = metrics["costs"], f"`tessera eval pixel` run ({args.from_eval})"
    else:
        costs, source = cost_table(args.bundle), f"`make pixel-bench` on {args.bundle}"
    RESULTS.mkdir(exist_ok=True)
    write_report(RESULTS / "pixel_sequence_length.json", {"source": source, **costs})
    text = f"{render_table(costs)}\n\nMeasured by the {source}, on 2 shared CPU cores.\n"
    (RESULTS / "pixel_sequence_length.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
