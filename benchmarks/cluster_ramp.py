"""`make cluster-bench`: GPU nodes and replicas over time under a load ramp, on the simulated
cluster of `tessera cluster up` (cluster-sim profile, Ray's fake_multinode provider).

Starts the cluster on a tiny random bundle (the point is the scaling, not the images), ramps
closed-loop HTTP load up and down in stages, records one observer snapshot a second (nodes by
type, replicas per deployment and node, pending GPU demand) and every request, waits for the
idle GPU node to be removed, stops the cluster, and writes
benchmarks/results/cluster_ramp.json and cluster_ramp.png.

    python -m benchmarks.cluster_ramp                       # default ramp
    python -m benchmarks.cluster_ramp --stages 1:20,4:40,0:1 --out /tmp/ramp
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tessera.cluster import sim
from tessera.cluster.load import Load
from tessera.cluster.observe import Watcher, gpu_nodes, replicas_on

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GPU_DEPLOYMENT = "Detokenizer"
DEFAULT_STAGES = "1:30,2:30,4:40,2:20,0:1"  # concurrency:seconds; 0 ends the load


def parse_stages(text: str) -> list[tuple[int, float]]:
    stages = []
    for part in text.split(","):
        concurrency, _, seconds = part.partition(":")
        stages.append((int(concurrency), float(seconds)))
    return stages


def run_ramp(
    cluster: sim.SimCluster, stages: list[tuple[int, float]], settle_s: float = 240.0
) -> dict[str, Any]:
    """Drive the stages against ``cluster`` and record what happened."""
    watcher = Watcher(cluster.directory, interval_s=1.0)
    try:
        watcher.wait_for(lambda s: not gpu_nodes(s), settle_s)
        t0 = time.time()
        load = Load(cluster.http, concurrency=0).start(max(c for c, _ in stages))
        ramp = []
        for concurrency, seconds in stages:
            load.concurrency = concurrency
            ramp.append({"t": round(time.time() - t0, 1), "concurrency": concurrency})
            time.sleep(seconds)
        load.stop()
        stopped = time.time()
        ramp.append({"t": round(stopped - t0, 1), "concurrency": 0})
        removed = watcher.wait_for(
            lambda s: not gpu_nodes(s) and not s.get("replicas", {}).get(GPU_DEPLOYMENT),
            settle_s,
            after=stopped,
        )
        time.sleep(3)
        samples = [
            {
                "t": round(s["t"] - t0, 1),
                "gpu_nodes": len(gpu_nodes(s)),
                "nodes": s.get("nodes", {}),
                "replicas": {d: sum(n.values()) for d, n in s.get("replicas", {}).items()},
                "gpu_replicas": replicas_on(s, GPU_DEPLOYMENT, gpu_nodes(s)),
                "gpu_demand": s.get("demand", {}).get("GPU", 0.0),
            }
            for s in watcher.snapshots
            if s["t"] >= t0 - 5
        ]
    finally:
        watcher.close()
    return {
        "stages": ramp,
        "samples": samples,
        "completions": completions(load.outcomes, t0),
        "node_removed_s": round(removed["t"] - t0, 1),
        "ok": sum(o.ok for o in load.outcomes),
        "failed": sum(not o.ok for o in load.outcomes),
    }


def completions(outcomes: list[Any], t0: float, width_s: float = 5.0) -> list[dict[str, Any]]:
    """Requests finished per ``width_s`` bin: [{"t": bin start, "ok": n, "failed": m}]."""
    bins: dict[int, dict[str, Any]] = {}
    for outcome in outcomes:
        index = int((outcome.end - t0) // width_s)
        entry = bins.setdefault(index, {"t": index * width_s, "ok": 0, "failed": 0})
        entry["ok" if outcome.ok else "failed"] += 1
    last = max(bins, default=-1)
    return [bins.get(i, {"t": i * width_s, "ok": 0, "failed": 0}) for i in range(last + 1)]


def dump(result: dict[str, Any]) -> str:
    """JSON with one list item per line (small diffs, still one json.loads)."""
    parts = []
    for key, value in result.items():
        if isinstance(value, list):
            items = ",\n    ".join(json.dumps(item) for item in value)
            parts.append(f'  "{key}": [\n    {items}\n  ]')
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    t = [s["t"] for s in samples]
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(10, 7.5), sharex=True)
    top.step(t, [s["gpu_nodes"] for s in samples], where="post", label="gpu-worker nodes")
    top.step(t, [s["gpu_demand"] for s in samples], where="post", ls=":", label="pending GPU")
    top.set_ylabel("nodes / GPUs")
    top.legend(loc="upper right")
    top.set_title("Simulated cluster under a load ramp (cluster-sim profile)")
    names = sorted({d for s in samples for d in s["replicas"]})
    for name in names:
        mid.step(t, [s["replicas"].get(name, 0) for s in samples], where="post", label=name)
    mid.set_ylabel("replicas")
    mid.legend(loc="upper right", fontsize="small", ncol=2)
    stages = result["stages"]
    low.step(
        [s["t"] for s in stages],
        [s["concurrency"] for s in stages],
        where="post",
        color="k",
        label="concurrency",
    )
    bins = result["completions"]
    if len(bins) > 1:
        width = bins[1]["t"] - bins[0]["t"]
        twin = low.twinx()
        twin.plot(
            [b["t"] + width / 2 for b in bins],
            [b["ok"] / width for b in bins],
            color="tab:green",
            label="ok requests / s",
        )
        twin.set_ylabel("requests / s")
        twin.legend(loc="upper right")
    low.set_ylabel("concurrency")
    low.set_xlabel("seconds")
    low.legend(loc="upper left")
    for axis in (top, mid, low):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default=DEFAULT_STAGES, help="concurrency:seconds,...")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--bundle-dir", default=None, help="default: a tiny random bundle")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's logs")
    args = parser.parse_args(argv)
    import subprocess
    import sys

    work = Path(tempfile.mkdtemp(prefix="tessera-ramp-"))
    bundle = args.bundle_dir
    if bundle is None:
        from tessera.bundle.random_init import build_random_bundle

        bundle = str(work / "tiny")
        build_random_bundle(Path(bundle), "tiny", tiny=True, seed=0)
    directory = work / "cluster"
    # `up` deploys as a Ray driver; this process stays off the cluster, like the test.
    cmd = [
        sys.executable, "-m", "tessera.cli", "cluster", "up", "--dir", str(directory),
        "--bundle-dir", bundle, "--http-port", "0", "--grpc-port", "0",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, check=True, timeout=900)
        result = run_ramp(sim.SimCluster.load(directory), parse_stages(args.stages))
    finally:
        if (directory / sim.STATE_FILE).exists():
            sim.down(directory)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster_ramp.json").write_text(dump(result))
    plot(result, args.out / "cluster_ramp.png")
    print(f"wrote {args.out / 'cluster_ramp.json'} and cluster_ramp.png")
    print(f"requests ok {result['ok']}, failed {result['failed']}; "
          f"GPU node removed at {result['node_removed_s']} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
