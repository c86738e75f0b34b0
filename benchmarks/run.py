"""`make bench`: serving benchmarks, written to benchmarks/results/latest.json + .md + .png.

Ratios are measured in one run on one machine (these machines are noisy):
1. served (HTTP and gRPC, full route) vs in-process pipeline latency at concurrency 1, per
   route, the two alternating request by request with the stack up; the stack takes
   requests the default way (``TESSERA_INGRESS``, direct ingress), and a second stack the
   other way gets this pairing and the load of 2b again;
2. throughput and p50/p99 latency at concurrency 1, 4 and 16, per route;
2b. platform overhead under load (``benchmarks/overhead.py``): served throughput at 16
   clients vs the same ``Pipelines`` in-process with 16 concurrent callers, rounds
   alternating, and CPU ms per request by stage (per-process CPU of the stack's processes;
   in-process, by thread), plus the protobuf serialisation one request costs, and what
   each hop adds at concurrency 1 (each handle call replayed in-process and served);
3. LM image-token sampling vs Hugging Face ``transformers`` ``generate()`` on a GPT-2 of the
   same size (same batch and length), with and without guidance;
4. decoder sampling vs ``diffusers`` (``UNet2DConditionModel`` built like the decoder, parameter
   count within 5%, + ``DDIMScheduler``) at the same steps; the fewest DPM-Solver++ steps at
   DDIM's quality (``benchmarks/decoder_quality.py``) and images/s there vs the peer at DDIM;
5. achieved model FLOP/s vs this machine's measured matmul peak;
6. LM sampling with the KV cache vs without, for a full grid;
7. async jobs: jobs/s and submit→result p50/p99 at 1 and 8 workers.
Each figure is the median over repeated runs, with the spread (min..max). Everything runs with
the torch thread count a served replica uses (``TESSERA_TORCH_THREADS``, default 1), so the
in-process and peer baselines compete on the same footing.

    python -m benchmarks.run                 # the default bundle (random weights if missing)
    python -m benchmarks.run --quick         # tiny bundle, few repeats (a smoke run)
    python -m benchmarks.run --profile gpu   # models on CUDA, deploy/serve/gpu.yaml; results
                                             # in benchmarks/results/gpu/, beside the CPU ones
    python -m benchmarks.run --profile gpu --no-served --no-jobs   # model parts only, no Ray

`make test` runs each part on the tiny bundle (tests/benchmarks, and the served parts against
the test session's stack in tests/integration/test_bench_served.py); it times nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import torch

from benchmarks.report import ROUTES, write_report

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# What a profile changes: where the models run, which serve config the stack uses, and where
# the results go (GPU results are committed beside the CPU ones).
PROFILES = {
    "cpu": {"device": "cpu", "serve_config": "local.yaml", "out": RESULTS},
    "gpu": {"device": "cuda", "serve_config": "gpu.yaml", "out": RESULTS / "gpu"},
}
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


# ------------------------------------------------------------------------- in-process
# gRPC requests of the paired measure use prompts this far on: prompts the replicas have not
# encoded for the HTTP request just before (their MiniLM caches would flatter the second ingress)
GRPC_PROMPT_OFFSET = 1_000_000


def paired_latency(
    bundle_dir: Path,
    url: str,
    repeats: int,
    device: str = "cpu",
    pipelines: object = None,
    grpc_target: str | None = None,
) -> dict:
    """Concurrency-1 latency of each route in-process and served, alternating request by
    request with the stack up: both see the same machine at the same moments, so the ratio
    is the cost of serving (HTTP, hops, serialisation), not of whatever else this shared
    machine was doing while one of them ran. With ``grpc_target`` the gRPC API takes a turn
    too (``served_grpc``), so the two ingresses are compared on the same moments."""
    import grpc

    from tessera.routes.local import local_pipelines
    from tessera.routes.schemas import GenerationParams
    from tessera.v1 import generation_pb2, generation_pb2_grpc

    pipelines = pipelines or local_pipelines(bundle_dir, device)

    async def run() -> dict:
        out: dict = {"in_process": {}, "served": {}}
        channel = grpc.aio.insecure_channel(grpc_target) if grpc_target else None
        stub = generation_pb2_grpc.GenerationServiceStub(channel) if channel else None
        async with httpx.AsyncClient(base_url=url, timeout=600) as client:

            async def served_once(body: dict) -> float:
                t0 = time.perf_counter()
                r = await client.post("/v1/images/generations", json=body)
                r.raise_for_status()
                return time.perf_counter() - t0

            async def grpc_once(body: dict) -> float:
                t0 = time.perf_counter()
                await stub.Generate(generation_pb2.GenerateRequest(**body), timeout=600)
                return time.perf_counter() - t0

            async def local_once(params: GenerationParams) -> float:
                t0 = time.perf_counter()
                await pipelines.generate(params)
                return time.perf_counter() - t0

            try:
                for route in ROUTES:
                    warm = {"prompt": "warm up", "route": route, "seed": 0}
                    await local_once(GenerationParams(**warm))
                    await served_once(warm)
                    if stub:
                        await grpc_once(warm)
                    local, remote, remote_grpc = [], [], []
                    for i in range(repeats):  # distinct prompts, the same ones both ways
                        body = {"prompt": prompt(i), "route": route, "seed": i}
                        local.append(await local_once(GenerationParams(**body)))
                        remote.append(await served_once(body))
                        if stub:
                            other = {**body, "prompt": prompt(GRPC_PROMPT_OFFSET + i)}
                            remote_grpc.append(await grpc_once(other))
                    out["in_process"][route], out["served"][route] = (
                        summarize(local),
                        summarize(remote),
                    )
                    if stub:
                        out.setdefault("served_grpc", {})[route] = summarize(remote_grpc)
            finally:
                if channel is not None:
                    await channel.close()
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


def served(
    url: str, repeats: int, levels: tuple[int, ...], rounds: int = 3, per_client: int = 8
) -> dict:
    """Per route and concurrency c: ``rounds`` runs of max(repeats, per_client * c) requests.
    Closed-loop clients move in waves (all start together, batch together, finish together),
    so a round gives each client several requests to spread out. Throughput is the median
    round (with the spread); latencies pool every round's requests."""
    out: dict = {}
    first = 1000  # past the in-process run's prompts; every run gets prompts of its own
    for route in ROUTES:
        out[route] = {}
        for c in levels:
            count = max(repeats, per_client * c)
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
def kv_cache_speedup(bundle_dir: Path, repeats: int, device: str = "cpu") -> dict:
    from benchmarks import texts
    from benchmarks.peers import synchronize
    from tessera.common.checkpoint import load_bundle_component
    from tessera.lm.sampling import SamplingParams, sample_tokens

    model = load_bundle_component(bundle_dir, "lm", device=torch.device(device))
    text = texts.encode(["grinning face"] * 4).to(device)
    params = [SamplingParams(seed=i) for i in range(4)]
    result = {}
    for use_cache in (True, False):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with torch.inference_mode():
                sample_tokens(model, text, params, use_cache=use_cache)
            synchronize()
            times.append(time.perf_counter() - t0)
        result["cached" if use_cache else "uncached"] = summarize(times)
    result["speedup"] = result["uncached"]["median"] / result["cached"]["median"]
    result["grid_tokens"] = model.config.grid_size**2
    return result


# ----------------------------------------------------------------------------- peers
def peer_comparisons(bundle_dir: Path, repeats: int, device: str = "cpu") -> dict:
    from benchmarks import decoder_quality, peers
    from tessera.common.checkpoint import load_bundle_component

    dev = torch.device(device)
    lm = load_bundle_component(bundle_dir, "lm", device=dev)
    decoder = load_bundle_component(bundle_dir, "decoder", device=dev)
    out = {"matmul_peak": peers.matmul_peak(device=device)}
    # A sampling call is ~0.1 s here: three times the runs cost seconds and steady a median
    # that five runs left to one slow spell of a shared machine.
    out["lm"] = peers.lm_vs_transformers(
        lm, batch=16, repeats=3 * repeats, summarize=summarize, device=device
    )
    print("decoder: DPM-Solver++ steps at DDIM's quality…", flush=True)
    quick = decoder.config.default_steps < 25  # the tiny bundle: a smoke run
    quality = decoder_quality.solver_quality(
        bundle_dir,
        n=4 if quick else 32,
        steps=(2, 4) if quick else decoder_quality.CANDIDATE_STEPS,
        device=device,
        reference_steps=20 if quick else 200,
    )
    out["decoder_quality"] = quality
    out["decoder"] = peers.decoder_vs_diffusers(
        decoder,
        batch=8,
        steps=decoder.config.default_steps,
        repeats=repeats,
        summarize=summarize,
        device=device,
        solver_steps=quality["fewest_steps"] or decoder.config.default_steps,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Tessera serving benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny bundle, few repeats")
    parser.add_argument("--bundle-dir", type=Path, default=None)
    parser.add_argument(
        "--url", default=None, help="benchmark a running stack instead of starting one"
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="cpu",
        help="gpu: models on CUDA, deploy/serve/gpu.yaml, results in benchmarks/results/gpu",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the profile's folder")
    parser.add_argument(
        "--text-states",
        type=Path,
        default=None,
        help="prompt encodings from `python -m benchmarks.texts` (for a machine without MiniLM)",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-jobs", action="store_true")
    parser.add_argument("--no-peers", action="store_true", help="skip transformers/diffusers")
    parser.add_argument(
        "--no-served", action="store_true", help="model benchmarks only: no Ray stack"
    )
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    device, out_dir = profile["device"], args.out or profile["out"]
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--profile gpu needs a CUDA device, and torch sees none")
    if args.text_states:
        from benchmarks import texts

        print(f"{texts.load(args.text_states)} prompt encodings from {args.text_states}")

    from tessera.bundle.random_init import build_random_bundle
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
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "profile": args.profile,
            "torch": torch.__version__,
            "quick": args.quick,
        }
    }
    print("continuous vs static batching…", flush=True)
    from benchmarks.batching import continuous_vs_static
    from tessera.common.checkpoint import load_bundle_component

    lm = load_bundle_component(bundle_dir, "lm", device=torch.device(device))
    requests = 8 if args.quick else 16
    batch_repeats = max(3, repeats // 2)
    results["batching"] = continuous_vs_static(lm, batch_repeats, summarize, requests=requests)
    print("KV cache…", flush=True)
    results["kv_cache"] = kv_cache_speedup(bundle_dir, max(2, repeats // 3), device)
    if not args.no_peers:
        print("peers: transformers, diffusers, matmul peak…", flush=True)
        results["peers"] = peer_comparisons(bundle_dir, max(3, repeats // 2), device)
    if not args.no_served:
        results.update(served_parts(args, bundle_dir, repeats, levels, profile, results["meta"]))
    if not args.no_jobs:
        print("async jobs…", flush=True)
        from benchmarks import jobs_bench

        results["jobs"] = {
            str(w): jobs_bench.run(workers=w, jobs=20 if args.quick else 200) for w in (1, 8)
        }
    write_report(results, out_dir)
    print((out_dir / "latest.md").read_text())
    return 0


def served_parts(
    args: argparse.Namespace,
    bundle_dir: Path,
    repeats: int,
    levels: tuple,
    profile: dict,
    meta: dict,
) -> dict:
    """Paired latency and throughput against ``--url``, or a stack started for the run (its
    ingress goes in ``meta``)."""
    from tessera import runtime
    from tessera.common.settings import get_settings

    url = args.url
    if url is None:  # the default ingress first (what `tessera serve` runs), then the other
        meta["ingress"] = get_settings().ingress
        other = next(kind for kind in runtime.INGRESS_KINDS if kind != meta["ingress"])
        endpoints = start_stack(bundle_dir, profile, meta["ingress"])
        url = endpoints["http"]
    from benchmarks import overhead
    from tessera.routes.local import local_pipelines

    try:
        pipelines = local_pipelines(bundle_dir, profile["device"])
        print("in-process vs served latency…", flush=True)
        grpc_target = None if args.url else endpoints["grpc"]  # the stack this run started
        paired = paired_latency(
            bundle_dir, url, repeats, profile["device"], pipelines, grpc_target=grpc_target
        )
        print("served throughput…", flush=True)
        out = {"paired": paired, "served": served(url, repeats, levels)}
        print("platform overhead under load…", flush=True)
        top = max(levels)
        out["overhead"] = overhead.platform_overhead(
            pipelines,
            url,
            ROUTES,
            prompt,
            summarize,
            concurrency=top,
            requests=max(repeats, 8 * top),
            rounds=2 if args.quick else 3,
            cpu=args.url is None,  # the stack's processes are ours to read only if we started it
        )
        out["serialisation"] = {r: overhead.serialisation_ms(pipelines, r) for r in ROUTES}
        if args.url is None:  # Serve handles need this process to be the stack's driver
            print("what each hop adds…", flush=True)
            out["hops"] = overhead.hop_latency(pipelines, ROUTES, repeats=2 * repeats)
    finally:
        if args.url is None:
            runtime.stop()
    if args.url is None and not args.quick:
        out["second_stack"] = second_stack_part(bundle_dir, profile, other, pipelines, repeats, top)
    return out


def start_stack(bundle_dir: Path, profile: dict, ingress: str) -> dict:
    """The profile's stack on free ports, ``ingress`` "proxy" (Serve's proxy actor takes the
    requests) or "direct" (the Gateway replica binds the ports): ``tessera.runtime``."""
    from tessera import runtime

    config = runtime.StackConfig(
        serve_config=REPO / "deploy" / "serve" / profile["serve_config"],
        http_port=runtime.free_port(),
        grpc_port=runtime.free_port(),
        metrics_port=None,
        app_args={"bundle_dir": str(bundle_dir), "device": profile["device"]},
        quiet=True,
        ingress=ingress,
    )
    return runtime.start(config)


def second_stack_part(
    bundle_dir: Path,
    profile: dict,
    ingress: str,
    pipelines: object,
    repeats: int,
    concurrency: int,
) -> dict:
    """The concurrency-1 pairing and the overhead under load again, on a second stack that
    takes requests the other way (``tessera serve --ingress``): what Serve's proxy costs,
    measured the same way as the rest."""
    from benchmarks import overhead
    from tessera import runtime

    print(f"{ingress} ingress: in-process vs served latency…", flush=True)
    endpoints = start_stack(bundle_dir, profile, ingress)
    try:
        out = {
            "ingress": ingress,
            "paired": paired_latency(
                bundle_dir,
                endpoints["http"],
                repeats,
                profile["device"],
                pipelines,
                grpc_target=endpoints["grpc"],
            ),
        }
        print(f"{ingress} ingress: platform overhead under load…", flush=True)
        out["overhead"] = overhead.platform_overhead(
            pipelines,
            endpoints["http"],
            ROUTES,
            prompt,
            summarize,
            concurrency=concurrency,
            requests=max(repeats, 8 * concurrency),
            rounds=3,
        )
        return out
    finally:
        runtime.stop()


if __name__ == "__main__":
    raise SystemExit(main())
