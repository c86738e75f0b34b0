"""`make mixed-bench`: the mixed-modal model's edits through the LM's engine (continuous
batching) against request-level batching (the engine's ``static``) and the offline sampler
(``generate_images``) one request at a time and as one batch.

Eight greedy edits (three guided rows each) on a random model of the default size (6 layers,
192 wide, 8x8 grid), arriving 20 ms apart; best of ``--rounds`` per mode, one thread. Writes
``benchmarks/results/mixed_engine.{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tessera.mixed.engine import MixedSampler
from tessera.mixed.generate import edit_weights, generate_images
from tessera.mixed.model import MixedConfig, MixedTransformer
from tessera.mixed.sequences import Builder
from tessera.training.reports import write_report

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = MixedConfig(text_vocab=512, image_vocab=512, grid_size=8)
    model = MixedTransformer(config).eval()
    b, n = Builder(config.layout), config.layout.n_cells
    blank, weights = [0] * n, edit_weights(1.5, 3.0)

    def rows(i: int) -> list:
        src, text = [(7 * i + j) % 512 for j in range(n)], [10 + i, 20, 30]
        return [b.prompt(b.edit(text, src, blank)), b.prompt(b.edit([], src, blank)),
                b.prompt(b.edit([], None, blank))]  # fmt: skip

    def offline_each() -> dict:
        for i in range(args.edits):
            generate_images(model, [rows(i)], weights, temperature=0.0)
        return {}

    def offline_batch() -> dict:
        generate_images(model, [rows(i) for i in range(args.edits)], weights, temperature=0.0)
        return {}

    def engine(static: bool) -> dict:
        sampler = MixedSampler(model, max_rows=3 * args.edits, static=static)
        try:
            futures = []
            for i in range(args.edits):
                futures.append(sampler.submit([rows(i)], [weights], [i], top_k=1))
                time.sleep(0.02)
            for f in futures:
                f.result()
            return {"decode_steps": sampler.steps}
        finally:
            sampler.close()

    modes = {
        "offline, one request at a time": offline_each,
        "offline, one batch of all": offline_batch,
        "engine, continuous (the deployment)": lambda: engine(False),
        "engine, static (request-level)": lambda: engine(True),
    }
    results = {}
    for name, run in modes.items():
        best, extra = float("inf"), {}
        for _ in range(args.rounds):
            start = time.perf_counter()
            extra = run()
            best = min(best, time.perf_counter() - start)
        results[name] = {"seconds": round(best, 3), **extra}
    params = sum(p.numel() for p in model.parameters())
    head = f"{args.edits} greedy edits (3 rows each), model {params / 1e6:.1f}M params, 1 thread"
    lines = [f"# Mixed-model edits: {head}", "", "| mode | seconds (best of "
             f"{args.rounds}) | decode steps |", "|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"| {name} | {r['seconds']:.2f} | {r.get('decode_steps', '')} |")
    text = "\n".join(lines) + "\n\nMeasured by `make mixed-bench` on 2 shared CPU cores.\n"
    RESULTS.mkdir(exist_ok=True)
    write_report(RESULTS / "mixed_engine.json", {"setup": head, "results": results})
    (RESULTS / "mixed_engine.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
