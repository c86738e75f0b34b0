"""GPU worker nodes that come and go: Tessera's cluster-sim profile on a simulated Ray cluster
(Ray's fake_multinode provider, `tessera cluster up`), driven by HTTP load.

Seen in order: pending GPU demand -> a gpu-worker node joins -> the Detokenizer's replica
starts there -> requests succeed throughout -> that node is SIGKILLed under load: no job is
lost, synchronous requests succeed or get a retryable 503, the replica is rescheduled on a
new node -> load stops -> the replica scales down -> the node is removed.

The cluster is a separate Ray instance from the session's stack, so this process never
connects to it: `tessera cluster up` deploys from a subprocess, an observer subprocess
reports nodes/replicas/demand, and the test talks HTTP. Set TESSERA_CLUSTER_TIMELINE=path
to keep the measured timeline as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from tessera.cluster import sim
from tessera.cluster.load import FINAL_JOB_STATES, Load, job_records, submit_jobs
from tessera.cluster.observe import Watcher, gpu_nodes, replicas_on

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GPU_DEPLOYMENT = "Detokenizer"  # the one deployment on gpu-worker nodes in cluster-sim
WAIT_S = 300  # per step: generous, the machine is small and may be shared
JOBS = 6


@pytest.fixture(scope="module")
def cluster(tiny_bundle: Path):
    try:
        sim.check_fake_provider()
    except sim.FakeProviderUnavailable as e:
        pytest.skip(str(e))
    directory = Path(tempfile.mkdtemp(prefix="tessera-cluster-"))  # short: Redis' socket
    cmd = [
        sys.executable, "-m", "tessera.cli", "cluster", "up", "--dir", str(directory),
        "--bundle-dir", str(tiny_bundle), "--http-port", "0", "--grpc-port", "0",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield sim.SimCluster.load(directory)
    finally:
        if (directory / sim.STATE_FILE).exists():
            sim.down(directory)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def watcher(cluster: sim.SimCluster):
    w = Watcher(cluster.directory, interval_s=1.0)
    yield w
    w.close()


def wants_gpu(snap: dict) -> bool:
    """Pending GPU demand: a replica asks for a GPU no node has, or the autoscaler is
    launching a gpu-worker for it."""
    pending = snap.get("autoscaler", {}).get("pending_nodes", {}).get("gpu-worker", 0)
    return snap.get("demand", {}).get("GPU", 0) > 0 or pending > 0


def retried_calls(cluster: sim.SimCluster) -> int:
    """Handle calls the Gateway and JobWorker retried after losing a replica (their logs)."""
    logs = cluster.ray_temp_dir / "session_latest" / "logs"
    return sum(
        path.read_text(errors="replace").count("replica lost during")
        for path in logs.rglob("*")
        if path.is_file() and path.suffix in (".log", ".err", ".out")
    )


@pytest.mark.timeout(1800)
def test_gpu_nodes_come_and_go_and_a_dead_node_loses_no_job(cluster, watcher):
    started = time.time()
    events: dict[str, float] = {}

    def mark(name: str, snap: dict | None = None) -> None:
        events[name] = snap["t"] if snap else time.time()

    mark("idle", watcher.wait_for(lambda s: not gpu_nodes(s), WAIT_S))
    load = Load(cluster.http, concurrency=2).start()
    try:
        mark("load_started")
        after = events["load_started"]
        demand = watcher.wait_for(wants_gpu, WAIT_S, after=after)
        mark("gpu_demand", demand)
        joined = watcher.wait_for(lambda s: gpu_nodes(s), WAIT_S, after=after)
        mark("node_joined", joined)
        placed = watcher.wait_for(
            lambda s: replicas_on(s, GPU_DEPLOYMENT, gpu_nodes(s)) > 0, WAIT_S, after=after
        )
        mark("replica_on_gpu_node", placed)
        # Serve holds requests for a deployment at zero replicas until one starts: the
        # first ones wait for the node, and all succeed.
        watcher.wait_for(lambda s: s["t"] > placed["t"] + 10, WAIT_S)
        before_kill = load.between(after, time.time())
        assert before_kill and all(o.ok for o in before_kill), Counter(
            (o.status, o.code) for o in before_kill
        )

        # Node failure under load: the node holding the GPU replica dies with jobs in flight.
        jobs = submit_jobs(cluster.http, JOBS)
        time.sleep(1.0)
        victim = next(n for n in gpu_nodes(placed) if replicas_on(placed, GPU_DEPLOYMENT, [n]) > 0)
        killed = sim.kill_node(Path(cluster.directory), victim)
        mark("node_killed")
        assert killed
        recovered = watcher.wait_for(
            lambda s: (
                victim not in s["node_types"] and replicas_on(s, GPU_DEPLOYMENT, gpu_nodes(s)) > 0
            ),
            WAIT_S,
            after=events["node_killed"],
        )
        mark("replica_rescheduled", recovered)
        watcher.wait_for(lambda s: s["t"] > recovered["t"] + 5, WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while True:
            records = job_records(cluster.http, jobs)
            states = {job: record["state"] for job, record in records.items()}
            if all(state in FINAL_JOB_STATES for state in states.values()):
                break
            assert time.monotonic() < deadline, states
            time.sleep(2)
        mark("jobs_finished")
    finally:
        load.stop()
    mark("load_stopped")

    lost = [job for job, state in states.items() if state != "succeeded"]
    assert not lost, states
    during = [o for o in load.outcomes if o.end >= events["node_killed"]]
    outcomes = Counter((o.status, o.code) for o in during)
    # Each request either succeeded (retried onto a live replica) or was told to retry.
    assert set(outcomes) <= {(200, ""), (503, "unavailable")}, outcomes
    assert outcomes[(200, "")] > 0

    down = watcher.wait_for(
        lambda s: not s.get("replicas", {}).get(GPU_DEPLOYMENT),
        WAIT_S,
        after=events["load_stopped"],
    )
    mark("replicas_scaled_down", down)
    removed = watcher.wait_for(lambda s: not gpu_nodes(s), WAIT_S, after=down["t"])
    mark("node_removed", removed)

    order = [
        "load_started", "gpu_demand", "node_joined", "replica_on_gpu_node", "node_killed",
        "replica_rescheduled", "load_stopped", "replicas_scaled_down", "node_removed",
    ]  # fmt: skip
    times = [events[name] for name in order]
    assert times == sorted(times), {name: events[name] - started for name in order}

    def counts(items: Counter) -> dict[str, int]:
        return {f"{status} {code}".strip(): n for (status, code), n in items.items()}

    timeline = {
        "seconds_from_load_start": {
            name: round(t - events["load_started"], 1) for name, t in events.items()
        },
        "requests": counts(Counter((o.status, o.code) for o in load.outcomes)),
        "requests_after_kill": counts(outcomes),
        "jobs": len(jobs),
        "job_attempts": sorted(record["attempts"] for record in records.values()),
        "jobs_lost": len(lost),
        "handle_calls_retried": retried_calls(cluster),
        "killed_pids": len(killed),
        "wall_s": round(time.time() - started, 1),
    }
    print(json.dumps(timeline, indent=2))
    if os.environ.get("TESSERA_CLUSTER_TIMELINE"):
        Path(os.environ["TESSERA_CLUSTER_TIMELINE"]).write_text(json.dumps(timeline, indent=2))
