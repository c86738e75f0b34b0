"""The sequence-length table: ``pixel`` (Image Transformer over sub-pixels) against ``ar``
(the LM over VQ tokens), measured in one run and projected to larger outputs.

Measured, per model, through its serving engine (``ContinuousSampler``, default guidance, so
two KV-cache rows per image): seconds per image with 1 request and with 16 at once, the steps
per image and the KV-cache bytes per image (the engine's own cache tensors). The pixel model
is measured at its trained size; ``ar`` at its native output (the tokenizer's image size).

Projected to 256x256 and 1024x1024 outputs:

- steps: pixel ``3 * side**2`` sub-pixels; ar ``(side / f)**2`` tokens with the tokenizer's
  downsampling factor f (a tokenizer trained at that size is assumed);
- KV bytes: pixel's cache is the prefix plus its attention window whatever the image (the
  window kept in sub-pixels); ar's grows with the sequence (prefix + every token);
- seconds per image: steps x the measured seconds per step at that batch. Exact for pixel
  (every step attends to at most prefix + window keys, so a step costs the same at any
  size); a lower bound for ar, whose attention per step grows with the position (full causal
  attention: per-step cost linear in the position, total quadratic in the steps).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tessera.common.checkpoint import load_bundle_component, read_config
from tessera.common.text_encoder import shared_text_encoder
from tessera.lm.engine import ContinuousSampler
from tessera.lm.sampling import SamplingParams
from tessera.pixel.engine import PixelSampler

BATCHES = (1, 16)
PROJECT_SIDES = (256, 1024)
PROMPT = "a red circle in the center"


def cache_bytes_per_image(model: torch.nn.Module) -> int:
    """KV-cache bytes one guided image holds in its engine: two rows of every layer."""
    cache = model.new_cache(1)
    return 2 * sum(t.numel() * t.element_size() for t in cache.k + cache.v)


def seconds_per_image(engine_cls: type, model: torch.nn.Module, batch: int) -> float:
    """Wall seconds for ``batch`` one-image requests submitted together, per image."""
    text = shared_text_encoder("cpu").encode([PROMPT])
    engine = engine_cls(model, max_rows=2 * max(BATCHES))
    try:
        engine.submit(text, [SamplingParams(seed=0)]).result()  # warm-up
        start = time.perf_counter()
        futures = [engine.submit(text, [SamplingParams(seed=s)]) for s in range(batch)]
        for f in futures:
            f.result()
        return (time.perf_counter() - start) / batch
    finally:
        engine.close()


def measure(name: str, engine_cls: type, model: torch.nn.Module, side: int, steps: int) -> dict:
    row: dict = {"route": name, "side": side, "steps": steps, "measured": True}
    row["kv_bytes"] = cache_bytes_per_image(model)
    for b in BATCHES:
        s = seconds_per_image(engine_cls, model, b)
        row[f"s_per_image_b{b}"] = s
        row[f"s_per_step_b{b}"] = s * b / steps  # one engine step serves all b images
        print(f"{name} {side}px batch {b}: {s:.3f} s/image", flush=True)
    return row


def project(row: dict, side: int, steps: int, kv_bytes: int, how: str) -> dict:
    out = {"route": row["route"], "side": side, "steps": steps, "kv_bytes": kv_bytes}
    for b in BATCHES:
        out[f"s_per_image_b{b}"] = steps * row[f"s_per_step_b{b}"] / b
    return {**out, "measured": False, "projection": how}


def cost_table(bundle: Path, likelihood: dict | None = None) -> dict:
    """Measure pixel and ar, then project both (see the module's docstring)."""
    torch.set_grad_enabled(False)
    pixel = load_bundle_component(bundle, "pixel").eval()
    lm = load_bundle_component(bundle, "lm").eval()
    tok = read_config(bundle / "tokenizer")
    pc, lc = pixel.config, lm.config
    factor = tok["image_size"] // lc.grid_size
    rows = [
        measure("pixel", PixelSampler, pixel, pc.image_size, pc.n_tokens),
        measure("ar", ContinuousSampler, lm, tok["image_size"], lc.n_tokens),
    ]
    p, a = rows
    if likelihood and "image_transformer" in likelihood:
        p["heldout_bpd"] = likelihood["image_transformer"]["heldout_bpd"]
    # pixel at ar's output size too: same model and window, more steps
    sides = (tok["image_size"], *PROJECT_SIDES)
    projected = []
    for side in sides:
        if side != pc.image_size:
            how = "steps x measured s/step (window-bounded attention: constant per step)"
            projected.append(project(p, side, 3 * side * side, p["kv_bytes"], how))
        if side != tok["image_size"]:
            tokens = (side // factor) ** 2
            per_token = a["kv_bytes"] // (lc.text_len + lc.n_tokens)
            kv = per_token * (lc.text_len + tokens)
            how = "steps x measured s/step: a lower bound (full attention grows per step)"
            projected.append(project(a, side, tokens, kv, how))
    return {"rows": rows + projected, "factor": factor, "batches": list(BATCHES)}


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def render_table(costs: dict) -> str:
    lines = [
        "### The sequence-length table (measured in one run; projections marked)",
        "",
        "| route | output | steps / image | KV cache / image | s / image, batch 1 | "
        "s / image, batch 16 | held-out bits/dim | how |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(costs["rows"], key=lambda r: (r["side"], r["route"])):
        bpd = f"{r['heldout_bpd']:.3f}" if "heldout_bpd" in r else "-"
        how = "measured" if r["measured"] else f"projected: {r['projection']}"
        lines.append(
            f"| {r['route']} | {r['side']}x{r['side']} | {r['steps']:,} | "
            f"{_bytes(r['kv_bytes'])} | {r['s_per_image_b1']:.3g} | {r['s_per_image_b16']:.3g} | "
            f"{bpd} | {how} |"
        )
    lines += [
        "",
        "KV cache: the engine's cache rows for one guided image (two rows: the prompt and the "
        "null condition), float32. The `ar` route's seconds exclude the de-tokenizer; its "
        "bits are per VQ token, not per sub-pixel, so no bits/dim is given. Projected `ar` "
        f"rows assume a tokenizer with the same downsampling factor ({costs['factor']}) "
        "trained at that size.",
    ]
    return "\n".join(lines)
