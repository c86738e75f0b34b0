"""`make bench`: serving benchmarks, written to benchmarks/results/latest.json + .md + .png.

Ratios are measured in one run on one machine (these machines are noisy):
1. served (HTTP, full route) vs in-process pipeline latency at concurrency 1, per route, the
   two alternating request by request with the stack up;
2. throughput and p50/p99 latency at concurrency 1, 4 and 16, per route;
3. LM image-token sampling vs Hugging Face ``transformers`` ``generate()`` on a GPT-2 of the
   same size (same batch and length), with and without guidance;
4. decoder sampling vs ``diffusers`` (``UNet2DModel`` + ``DDIMScheduler``) of similar size and
   the same steps;
5. achieved model FLOP/s vs this machine's measured matmul peak;
6. LM sampling with the KV cache vs without, for a full grid;
7. async jobs: jobs/s and submit→result p50/p99 at 1 and 8 workers.
Each figure is the median over repeated runs, with the spread (min..max). Everything runs with
the torch thread count a served replica uses (``TESSERA_TORCH_THREADS``, default 1), so the
in-process and peer baselines compete on the same footing.

    python -m benchmarks.run                 # the default bundle (random weights if missing)
    python -m benchmarks.run --quick         # tiny bundle, few repeats (a smoke run)

`make test` runs each part on the tiny bundle (tests/benchmarks, and the served parts against
the test session's stack in tests/integration/test_bench_served.py); it times nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ROUTES = ("ar", "unclip")
PROMPTS = ("grinning face", "red heart", "a small red fruit", "rocket")


def prompt(i: int) -> str:
    """Request i's prompt: distinct texts, so the text encoders' caches do not flatter the
    numbers (a request's own repeats, n images and reranking candidates, still hit them)."""
    return f"{PROMPTS[i % len(PROMPTS)]} {i}"


def summarize(values: list[float]) -> dict:
    ordered = sorted(values)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": ordered[0],
        "max": ordered[-1],
        "p50": pct(0.5),
        "p99": pct(0.99),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------- in-process
def paired_latency(bundle_dir: Path, url: str, repeats: int) -> dict:
    """Concurrency-1 latency of each route in-process and served, alternating request by
    request with the stack up: both see the same machine at the same moments, so the ratio
    is the cost of serving (HTTP, hops, serialisation), not of whatever else this shared
    machine was doing while one of them ran."""
    from tessera.gateway.local import local_pipelines
    from tessera.gateway.schemas import GenerationParams

    pipelines = local_pipelines(bundle_dir, "cpu")

    async def run() -> dict:
        out: dict = {"in_process": {}, "served": {}}
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:

            async def served_once(body: dict) -> float:
                t0 = time.perf_counter()
                r = await client.post("/v1/images/generations", json=body)
                r.raise_for_status()
                return time.perf_counter() - t0

            async def local_once(params: GenerationParams) -> float:
                t0 = time.perf_counter()
                await pipelines.generate(params)
                return time.perf_counter() - t0

            for route in ROUTES:
                await local_once(GenerationParams(prompt="warm up", route=route, seed=0))
                await served_once({"prompt": "warm up", "route": route, "seed": 0})
                local, remote = [], []
                for i in range(repeats):  # distinct prompts, the same ones both ways
                    local.append(
                        await local_once(GenerationParams(prompt=prompt(i), route=route, seed=i))
                    )
                    remote.append(
                        await served_once({"prompt": prompt(i), "route": route, "seed": i})
                    )
                out["in_process"][route], out["served"][route] = summarize(local), summarize(remote)
        return out

    return asyncio.run(run())


# ----------------------------------------------------------------------------- served
async def load(url: str, route: str, concurrency: int, requests: int, first: int = 0) -> dict:
    """``requests`` requests from ``concurrency`` closed-loop clients; prompts
    ``prompt(first + i)``.

    ``throughput_rps`` counts the steady part only: completions between the first
    ``concurrency`` and the last ``concurrency`` (all clients fire at once at the start, and at
    the end fewer and fewer are left), when ``requests`` leaves room for both; the whole run
    otherwise (``wall_throughput_rps`` is always the whole run)."""
    latencies: list[float] = []
    finished: list[float] = []
    counter = iter(range(first, first + requests))
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        await client.post("/v1/images/generations", json={"prompt": "warm up", "route": route})

        async def worker() -> None:
            for i in counter:
                body = {"prompt": prompt(i), "route": route, "seed": i}
                t0 = time.perf_counter()
                r = await client.post("/v1/images/generations", json=body)
                r.raise_for_status()
                finished.append(time.perf_counter())
                latencies.append(finished[-1] - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    c = concurrency
    steady = len(finished) > 2 * c and finished[-c - 1] > finished[c - 1]
    return {
        **summarize(latencies),
        "throughput_rps": (len(finished) - 2 * c) / (finished[-c - 1] - finished[c - 1])
        if steady
        else len(latencies) / wall,
        "wall_throughput_rps": len(latencies) / wall,
        "concurrency": concurrency,
        "latencies": latencies,
    }


def served(url: str, repeats: int, levels: tuple[int, ...], rounds: int = 3) -> dict:
    """Per route and concurrency c: ``rounds`` runs of max(repeats, 4c) requests. Throughput
    is the median round (with the spread); latencies pool every round's requests."""
    out: dict = {}
    first = 1000  # past the in-process run's prompts; every run gets prompts of its own
    for route in ROUTES:
        out[route] = {}
        for c in levels:
            count = max(repeats, 4 * c)
            runs = []
            for _ in range(rounds):
                runs.append(asyncio.run(load(url, route, c, count, first)))
                first += count
            latencies = [v for r in runs for v in r.pop("latencies")]
            rps = summarize([r["throughput_rps"] for r in runs])
            out[route][str(c)] = {
                **summarize(latencies),
                "throughput_rps": rps["median"],
                "throughput_min": rps["min"],
                "throughput_max": rps["max"],
                "rounds": rounds,
                "requests_per_round": count,
                "concurrency": c,
            }
    return out


# ----------------------------------------------------------------------------- KV cache
def kv_cache_speedup(bundle_dir: Path, repeats: int) -> dict:
    from tessera.common.checkpoint import load_bundle_component
    from tessera.common.text_encoder import shared_text_encoder
    from tessera.lm.sampling import SamplingParams, sample_tokens

    model = load_bundle_component(bundle_dir, "lm")
    text = shared_text_encoder("cpu").encode(["grinning face"] * 4)
    params = [SamplingParams(seed=i) for i in range(4)]
    result = {}
    for use_cache in (True, False):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.inference_mode():
                sample_tokens(model, text, params, use_cache=use_cache)
            times.append(time.perf_counter() - t0)
        result["cached" if use_cache else "uncached"] = summarize(times)
    result["speedup"] = result["uncached"]["median"] / result["cached"]["median"]
    result["grid_tokens"] = model.config.grid_size**2
    return result


# ----------------------------------------------------------------------------- peers
def peer_comparisons(bundle_dir: Path, repeats: int) -> dict:
    from benchmarks import peers
    from tessera.common.checkpoint import load_bundle_component

    lm = load_bundle_component(bundle_dir, "lm")
    decoder = load_bundle_component(bundle_dir, "decoder")
    out = {"matmul_peak": peers.matmul_peak()}
    out["lm"] = peers.lm_vs_transformers(lm, batch=16, repeats=repeats, summarize=summarize)
    out["decoder"] = peers.decoder_vs_diffusers(
        decoder, batch=8, steps=decoder.config.default_steps, repeats=repeats, summarize=summarize
    )
    return out


def spread(r: dict, fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(r['median'])} ({fmt.format(r['min'])}–{fmt.format(r['max'])})"


def peer_lines(p: dict) -> list[str]:
    peak = p["matmul_peak"]["gflops"]
    lm, dec = p["lm"], p["decoder"]
    lines = [
        "",
        f"Peers (median (min–max) over repeats, Tessera and peer alternating run by run; "
        f"matmul peak {peak:.1f} GFLOP/s with "
        f"{p['matmul_peak']['threads']} thread(s)):",
        "",
        "| sampler | guidance | Tessera | peer | Tessera / peer | Tessera GFLOP/s (% of peak) |",
        "|---|---|---|---|---|---|",
    ]

    def achieved(r: dict) -> str:
        return (
            f"{r['tessera_gflops_achieved']:.1f} ({100 * r['tessera_gflops_achieved'] / peak:.0f}%)"
        )

    for label in ("no_guidance", "guidance"):
        r = lm[label]
        lines.append(
            f"| LM tokens/s, batch {lm['batch']}, {lm['new_tokens']} tokens (vs transformers "
            f"GPT-2 `generate`) | {label} | {spread(r['tessera_tokens_per_s'], '{:.0f}')} | "
            f"{spread(r['transformers_tokens_per_s'], '{:.0f}')} | {r['speedup']:.2f} | "
            f"{achieved(r)} |"
        )
    for label in ("no_guidance", "guidance"):
        r = dec[label]
        lines.append(
            f"| decoder images/s, batch {dec['batch']}, DDIM {dec['steps']} (vs diffusers "
            f"UNet2DModel) | {label} | {spread(r['tessera_images_per_s'], '{:.2f}')} | "
            f"{spread(r['diffusers_images_per_s'], '{:.2f}')} | {r['speedup']:.2f} | "
            f"{achieved(r)}; "
            f"diffusers {r['diffusers_gflops_achieved']:.1f} |"
        )
    lines += [
        "",
        f"Parameters: LM {lm['params']['tessera']:,} vs GPT-2 {lm['params']['transformers']:,}; "
        f"decoder {dec['params']['tessera']:,} vs UNet2DModel {dec['params']['diffusers']:,} "
        "(the diffusers UNet is unconditional: no CLIP or text cross-attention).",
    ]
    return lines


# ----------------------------------------------------------------------------- report
def write_report(results: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# Benchmarks ({results['meta']['bundle']}, {results['meta']['when']})", ""]
    lines += [
        "Concurrency 1, in-process and served requests alternating with the stack up:",
        "",
        "| route | in-process median (s) | served median (s) | served / in-process |",
        "|---|---|---|---|",
    ]
    paired = results["paired"]
    for route in ROUTES:
        ip, sv = paired["in_process"][route], paired["served"][route]
        ratio = sv["median"] / ip["median"]
        lines.append(f"| {route} | {spread(ip)} | {spread(sv)} | {ratio:.2f} |")
    lines += [
        "",
        "Closed-loop clients; throughput counts the steady part of a run (the first and last"
        " c completions left out), median (min–max) over rounds; p50 / p99 over every"
        " round's requests:",
        "",
        "| route | concurrency | throughput (req/s) | p50 (s) | p99 (s) |",
        "|---|---|---|---|---|",
    ]
    for route in ROUTES:
        for c, r in results["served"][route].items():
            rps = f"{r['throughput_rps']:.2f}"
            if "throughput_min" in r:
                rps += f" ({r['throughput_min']:.2f}–{r['throughput_max']:.2f})"
            lines.append(f"| {route} | {c} | {rps} | {r['p50']:.3f} | {r['p99']:.3f} |")
    b = results["batching"]
    lines += [
        "",
        f"LM batching under staggered arrivals ({b['requests']} one-image requests, one every "
        f"{b['arrival_gap_s']:.3f}s; one alone takes {b['solo_s']:.3f}s; median (min–max) over "
        f"{b['continuous']['p99']['n']} interleaved runs):",
        "",
        "| schedule | p50 (s) | p99 (s) |",
        "|---|---|---|",
    ]
    for mode in ("continuous", "static"):
        lines.append(f"| {mode} | {spread(b[mode]['p50'])} | {spread(b[mode]['p99'])} |")
    kv = results["kv_cache"]
    lines += [
        "",
        f"KV cache: {kv['speedup']:.1f}x faster than cache-free sampling "
        f"({kv['grid_tokens']} tokens, batch 4; {kv['cached']['median']:.3f}s "
        f"vs {kv['uncached']['median']:.3f}s).",
    ]
    if "peers" in results:
        lines += peer_lines(results["peers"])
    if "jobs" in results:
        lines += [
            "",
            "| job workers | jobs/s | p50 submit→result (s) | p99 (s) |",
            "|---|---|---|---|",
        ]
        for w, r in results["jobs"].items():
            row = (w, r["jobs_per_s"], r["ideal_jobs_per_s"], r["p50_s"], r["p99_s"])
            lines.append("| {} | {:.1f} (ideal {:.0f}) | {:.3f} | {:.3f} |".format(*row))
    lines += bar_lines(results)
    (out_dir / "latest.md").write_text("\n".join(lines) + "\n")
    plot(results, out_dir / "latest.png")


def bar_lines(results: dict) -> list[str]:
    """The serving-performance bars, each with its measured value and whether it holds."""
    checks = []
    for route in ROUTES:
        paired = results["paired"]
        ratio = paired["served"][route]["median"] / paired["in_process"][route]["median"]
        checks.append((f"served / in-process latency, {route}, c=1", ratio, "<=", 1.25))
    for route in ROUTES:
        top = max(results["served"][route], key=int)
        gain = (
            results["served"][route][top]["throughput_rps"]
            / results["served"][route]["1"]["throughput_rps"]
        )
        checks.append((f"throughput c={top} / c=1, {route}", gain, ">=", 3.0))
    if "peers" in results:
        lm = results["peers"]["lm"]
        for g in ("no_guidance", "guidance"):
            label = f"LM tokens/s / transformers generate(), batch {lm['batch']}, {g}"
            checks.append((label, lm[g]["speedup"], ">=", 1.5))
    checks.append(
        (
            "static / continuous p99 under staggered arrivals",
            results["batching"]["p99_static_over_continuous"],
            ">",
            1.0,
        )
    )
    checks.append(("KV cache speed-up, full grid", results["kv_cache"]["speedup"], ">=", 5.0))
    lines = ["", "Bars (measured in this run):", "", "| bar | measured | target | holds |"]
    lines.append("|---|---|---|---|")
    for label, value, op, target in checks:
        holds = {"<=": value <= target, ">=": value >= target, ">": value > target}[op]
        lines.append(f"| {label} | {value:.2f} | {op} {target:g} | {'yes' if holds else 'NO'} |")
    return lines


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3 if "peers" in results else 2, figsize=(15, 4))
    for route in ROUTES:
        levels = sorted(results["served"][route], key=int)
        runs = [results["served"][route][c] for c in levels]
        rps = [r["throughput_rps"] for r in runs]
        axes[0].errorbar(  # the bars span the rounds' min..max
            [int(c) for c in levels],
            rps,
            yerr=[
                [v - r.get("throughput_min", v) for v, r in zip(rps, runs, strict=True)],
                [r.get("throughput_max", v) - v for v, r in zip(rps, runs, strict=True)],
            ],
            fmt="o-",
            capsize=3,
            label=route,
        )
        axes[1].plot(
            [int(c) for c in levels],
            [results["served"][route][c]["p99"] for c in levels],
            "o-",
            label=route,
        )
    axes[0].set(
        xlabel="concurrent clients", ylabel="requests / s", title="throughput", xscale="log"
    )
    axes[1].set(xlabel="concurrent clients", ylabel="seconds", title="p99 latency", xscale="log")
    if "peers" in results:
        p = results["peers"]
        labels, values = [], []
        for name, peer in (("lm", "transformers"), ("decoder", "diffusers")):
            for g in ("no_guidance", "guidance"):
                labels.append(f"{name} vs {peer}\n{g.replace('_', ' ')}")
                values.append(p[name][g]["speedup"])
        axes[2].bar(range(len(values)), values, color=["C0", "C0", "C1", "C1"])
        axes[2].axhline(1.0, color="k", lw=0.8)
        axes[2].set_xticks(range(len(values)), labels, fontsize=7)
        axes[2].set(ylabel="Tessera / peer (higher is faster)", title="vs peers, same machine")
    for ax in axes[:2]:
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tessera serving benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny bundle, few repeats")
    parser.add_argument("--bundle-dir", type=Path, default=None)
    parser.add_argument(
        "--url", default=None, help="benchmark a running stack instead of starting one"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-jobs", action="store_true")
    parser.add_argument("--no-peers", action="store_true", help="skip transformers/diffusers")
    args = parser.parse_args(argv)

    from tessera import runtime
    from tessera.bundle.init import build_random_bundle
    from tessera.common.settings import get_settings

    settings = get_settings()
    bundle_dir = args.bundle_dir or settings.bundle_dir
    if args.quick or not (bundle_dir / "model_index.json").is_file():
        bundle_dir = Path(tempfile.mkdtemp(prefix="tessera-bench-")) / "tiny"
        build_random_bundle(bundle_dir, "tiny", tiny=args.quick)
    repeats = args.repeats or (3 if args.quick else 10)
    levels = (1, 4) if args.quick else (1, 4, 16)
    torch.set_num_threads(settings.torch_threads)  # what each served replica uses
    results: dict = {
        "meta": {
            "bundle": bundle_dir.name,
            "when": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
            "quick": args.quick,
        }
    }
    print("continuous vs static batching…", flush=True)
    from benchmarks.batching import continuous_vs_static
    from tessera.common.checkpoint import load_bundle_component

    lm = load_bundle_component(bundle_dir, "lm")
    requests = 8 if args.quick else 16
    batch_repeats = max(3, repeats // 2)
    results["batching"] = continuous_vs_static(lm, batch_repeats, summarize, requests=requests)
    print("KV cache…", flush=True)
    results["kv_cache"] = kv_cache_speedup(bundle_dir, max(2, repeats // 3))
    if not args.no_peers:
        print("peers: transformers, diffusers, matmul peak…", flush=True)
        results["peers"] = peer_comparisons(bundle_dir, max(3, repeats // 2))
    url = args.url
    if url is None:
        config = runtime.StackConfig(
            serve_config=REPO / "deploy" / "serve" / "local.yaml",
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=None,
            app_args={"bundle_dir": str(bundle_dir)},
            quiet=True,
        )
        url = runtime.start(config)["http"]
    try:
        print("in-process vs served latency…", flush=True)
        results["paired"] = paired_latency(bundle_dir, url, repeats)
        print("served throughput…", flush=True)
        results["served"] = served(url, repeats, levels)
    finally:
        if args.url is None:
            runtime.stop()
    if not args.no_jobs:
        print("async jobs…", flush=True)
        from benchmarks import jobs_bench

        results["jobs"] = {
            str(w): jobs_bench.run(workers=w, jobs=20 if args.quick else 200) for w in (1, 8)
        }
    write_report(results, args.out)
    print((args.out / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
