"""The LM against ``transformers`` ``generate()`` on its own: a few minutes, not the whole bench.

    python -m benchmarks.lm_bench                 # the served bundle's LM, batch 16
    python -m benchmarks.lm_bench --rounds 3      # three independent rounds, ratios per round

Each round is ``peers.lm_vs_transformers`` (plain sampling and the peer alternating run by
run, without and with guidance, plus the speculative Jacobi row against plain sampling). A
round's ratios come from one stretch of time; on a shared machine the load changes between
rounds, so the report lists every round and the median of the rounds' ratios, wall time and
CPU time (this process's, ``time.process_time``: single-threaded work that the load
slows less than the clock). Results: ``benchmarks/results/lm/latest.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks import peers
from benchmarks.report import jacobi_lines
from benchmarks.run import summarize

OUT = Path(__file__).resolve().parent / "results" / "lm"
GUIDANCE = ("no_guidance", "guidance")


def run(lm: torch.nn.Module, rounds: int, repeats: int, batch: int = 16) -> dict:
    per_round = []
    for r in range(rounds):
        print(f"round {r + 1} of {rounds}…", flush=True)
        per_round.append(peers.lm_vs_transformers(lm, batch, repeats, summarize))
    median = {
        g: {
            key: statistics.median(x[g][key] for x in per_round)
            for key in ("speedup", "cpu_speedup")
        }
        for g in GUIDANCE
    }
    return {"rounds": per_round, "median": median, "batch": batch, "repeats": repeats}


def report(results: dict) -> str:
    meta, rounds = results["meta"], results["rounds"]
    first = rounds[0]
    lines = [
        f"# LM vs transformers generate() ({meta['bundle']}, {meta['when']})",
        "",
        f"Batch {first['batch']}, {first['new_tokens']} tokens, {first['prompt_tokens']}-token "
        f"prompt; {results['repeats']} runs a side per round, alternating; "
        f"{meta['threads']} torch thread(s); load average at the start {meta['load']}.",
        "",
        "| round | guidance | Tessera tokens/s | generate() tokens/s | wall ratio | CPU ratio | "
        "torch calls per token (Tessera / generate) |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds, 1):
        for g in GUIDANCE:
            row, calls = r[g], r[g]["torch_calls_per_token"]
            lines.append(
                f"| {i} | {g} | {row['tessera_tokens_per_s']['median']:.0f} | "
                f"{row['transformers_tokens_per_s']['median']:.0f} | {row['speedup']:.2f} | "
                f"{row['cpu_speedup']:.2f} | {calls['tessera']:.0f} / "
                f"{calls['transformers']:.0f} |"
            )
    lines += [
        "",
        "Median over rounds (bar: >= 2):",
        "",
        "| guidance | wall | CPU |",
        "|---|---|---|",
    ]
    for g in GUIDANCE:
        m = results["median"][g]
        lines.append(f"| {g} | {m['speedup']:.2f} | {m['cpu_speedup']:.2f} |")
    for i, r in enumerate(rounds, 1):
        lines += [f"\nRound {i}:"] + jacobi_lines(r)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    import os

    from tessera.common.checkpoint import load_bundle_component
    from tessera.common.settings import get_settings

    settings = get_settings()
    bundle_dir = args.bundle_dir or settings.bundle_dir
    torch.set_num_threads(settings.torch_threads)  # what a served replica uses
    lm = load_bundle_component(bundle_dir, "lm", device=torch.device("cpu"))
    results = run(lm, args.rounds, args.repeats)
    results["meta"] = {
        "bundle": bundle_dir.name,
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "threads": torch.get_num_threads(),
        "load": f"{os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "latest.md").write_text(report(results))
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
