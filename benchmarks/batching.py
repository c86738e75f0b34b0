"""Continuous vs static batching for the LM under staggered arrivals, measured in one run.

Requests arrive one every ``gap`` seconds (a fraction of one request's solo sampling time), so
most arrive while others are sampling. The continuous sampler admits each at the next token
step; the static one (same engine, ``static=True``) makes it wait until the running batch has
drained. Both produce identical tokens; only the schedule differs, which is what the latency
percentiles show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

PROMPTS = ("grinning face", "red heart", "a small red fruit", "rocket", "sun", "dog face")


def one_load(model: object, text: object, gap_s: float, max_rows: int, static: bool) -> list[float]:
    """Submit len(text) one-image requests ``gap_s`` apart; return each one's latency."""
    from tessera.common.text_encoder import TextBatch
    from tessera.lm.engine import ContinuousSampler
    from tessera.lm.sampling import SamplingParams

    sampler = ContinuousSampler(model, max_rows=max_rows, static=static)
    n = text.states.shape[0]
    latencies: list[float] = [0.0] * n
    finished = threading.Semaphore(0)

    def timer(i: int, start: float) -> Callable:
        def done(_future: object) -> None:
            latencies[i] = time.perf_counter() - start
            finished.release()

        return done

    try:
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i * gap_s - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            row = TextBatch(text.states[i : i + 1], text.mask[i : i + 1], text.pooled[i : i + 1])
            future = sampler.submit(row, [SamplingParams(seed=i)])
            future.add_done_callback(timer(i, time.perf_counter()))
        for _ in range(n):
            finished.acquire(timeout=600)
    finally:
        sampler.close()
    return latencies


def continuous_vs_static(
    model: torch.nn.Module, repeats: int, summarize: Callable, *, requests: int = 16
) -> dict:
    """p50/p99 latency of both schedules on the same arrivals; medians over ``repeats``."""
    from benchmarks import texts
    from tessera.common.text_encoder import TextBatch

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(requests)]
    device = next(model.parameters()).device  # the engine samples where the model is
    text = texts.encode(prompts).to(device)
    guided = model.config.guidance_scale != 1.0
    max_rows = requests * (2 if guided else 1)
    first = TextBatch(text.states[:1], text.mask[:1], text.pooled[:1])
    with torch.inference_mode():
        solo = min(one_load(model, first, 0.0, max_rows, static=False)[0] for _ in range(3))
    gap = solo / 4  # about four requests arrive during one request's sampling
    runs: dict[str, dict[str, list[float]]] = {
        "continuous": {"p50": [], "p99": []},
        "static": {"p50": [], "p99": []},
    }
    for _ in range(repeats):
        for mode in ("continuous", "static"):  # interleaved: drift hits both alike
            with torch.inference_mode():
                lat = one_load(model, text, gap, max_rows, static=mode == "static")
            s = summarize(lat)
            runs[mode]["p50"].append(s["p50"])
            runs[mode]["p99"].append(s["p99"])
    out: dict = {
        "requests": requests,
        "arrival_gap_s": round(gap, 4),
        "solo_s": round(solo, 4),
        "guided": guided,
    }
    for mode, r in runs.items():
        out[mode] = {"p50": summarize(r["p50"]), "p99": summarize(r["p99"])}
    out["p99_static_over_continuous"] = (
        out["static"]["p99"]["median"] / out["continuous"]["p99"]["median"]
    )
    return out
