"""Watch a cluster: one JSON line per interval with its nodes by type, the Serve replicas of
every deployment by node, the resource demand nothing can place yet, and the autoscaler's
counters.

    python -m tessera.cluster.observe --dir /tmp/sim [--interval 1]

It runs as its own Ray driver (a process connects to one Ray cluster), so a test or a
benchmark that must stay off the cluster reads its stdout instead. Each line::

    {"t": 1700000000.0, "nodes": {"ray.head.default": 1, "gpu-worker": 1},
     "node_types": {"<node id>": "gpu-worker", ...},
     "replicas": {"Detokenizer": {"<node id>": 1}, ...},
     "starting": {"Detokenizer": 1},
     "demand": {"GPU": 0.5, "CPU": 0.1},
     "autoscaler": {"active_nodes": {...}, "pending_nodes": {...}, "started_nodes": 1, ...}}
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.cluster import nodes
from tessera.cluster.sim import SimCluster

REPLICA_PREFIX = "ServeReplica:"
_SAMPLE = re.compile(r"^(autoscaler_[a-z_]+?)(?:_total)?(\{[^}]*\})? ([0-9.eE+-]+)$")


def node_types() -> dict[str, str]:
    """Alive node id -> node type (from the fake provider's node type label, else inferred:
    a node with GPUs is a ``gpu-worker``)."""
    import ray

    out = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        labels = node.get("Labels") or {}
        kind = labels.get("ray.io/node-group") or labels.get("ray.io/node-type-name")
        if not kind:
            if node.get("Resources", {}).get("GPU"):
                kind = nodes.GPU_WORKER
            else:
                kind = nodes.HEAD_NODE_TYPE
        out[node["NodeID"]] = kind
    return out


def replicas(app: str | None = None) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """(alive replicas per deployment per node id, replicas not yet alive per deployment)."""
    from ray._private import state

    alive: dict[str, dict[str, int]] = {}
    starting: dict[str, int] = {}
    for actor in state.actors().values():
        name = actor.get("ActorClassName") or ""
        if not name.startswith(REPLICA_PREFIX):
            continue
        _, _, rest = name.partition(":")
        application, _, deployment = rest.partition(":")
        if app and application != app:
            continue
        status = actor.get("State")
        if status == "ALIVE":
            node = (actor.get("Address") or {}).get("NodeID", "")
            per_node = alive.setdefault(deployment, {})
            per_node[node] = per_node.get(node, 0) + 1
        elif status in ("PENDING_CREATION", "DEPENDENCIES_UNREADY", "RESTARTING"):
            starting[deployment] = starting.get(deployment, 0) + 1
    return alive, starting


def demand(gcs_address: str) -> dict[str, float]:
    """Resources asked for by tasks and actors that no node can take now (what makes the
    autoscaler launch nodes)."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    total: dict[str, float] = {}
    status = get_cluster_status(gcs_address)
    for request in status.resource_demands.ray_task_actor_demand:
        for bundle in request.bundles_by_count:
            for resource, amount in bundle.bundle.items():
                total[resource] = total.get(resource, 0.0) + amount * bundle.count
    return total


def autoscaler_metrics(port: int) -> dict[str, Any]:
    """The autoscaler's own Prometheus metrics, summed over their SessionName label; per
    node type where they have one."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, Any] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1).endswith(("_bucket", "_created", "_sum", "_count")):
            continue
        name = match.group(1).removeprefix("autoscaler_")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        value = float(match.group(3))
        key = labels.get("NodeType") or labels.get("resource")
        if key:
            out.setdefault(name, {})[key] = value
        else:
            out[name] = value
    return out


def snapshot(cluster: SimCluster) -> dict[str, Any]:
    types = node_types()
    counts: dict[str, int] = {}
    for kind in types.values():
        counts[kind] = counts.get(kind, 0) + 1
    alive, starting = replicas()
    try:
        wanted = demand(cluster.gcs_address)
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        wanted = {"error": str(e)[:200]}
    return {
        "t": time.time(),
        "nodes": counts,
        "node_types": types,
        "replicas": alive,
        "starting": starting,
        "demand": wanted,
        "autoscaler": autoscaler_metrics(cluster.autoscaler_metrics_port),
    }


def watch(cluster: SimCluster, interval_s: float = 1.0, out: Any = sys.stdout) -> None:
    """Print a snapshot every ``interval_s`` until stdout closes or the cluster goes."""
    import ray

    ray.init(address=cluster.gcs_address, log_to_driver=False, logging_level=logging.WARNING)
    failures = 0
    while True:
        started = time.monotonic()
        try:
            line = json.dumps(snapshot(cluster))
            failures = 0
        except Exception as e:  # noqa: BLE001 - the cluster may be going away
            failures += 1
            if failures > 10:
                raise
            line = json.dumps({"t": time.time(), "error": str(e)[:200]})
        try:
            out.write(line + "\n")
            out.flush()
        except BrokenPipeError:
            return
        time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


class Watcher:
    """Runs :func:`watch` in a subprocess and keeps its snapshots: for callers that must not
    connect to the cluster themselves (a pytest process already connected to another one)."""

    def __init__(self, directory: Path | str, interval_s: float = 1.0) -> None:
        cmd = [sys.executable, "-m", "tessera.cluster.observe", "--dir", str(directory)]
        self.proc = subprocess.Popen(
            [*cmd, "--interval", str(interval_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=os.environ.copy(),
        )
        self.snapshots: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if not line.startswith("{"):  # Ray's own notices (a node marked dead, ...)
                continue
            snap = json.loads(line)
            if "error" in snap:
                continue
            with self._cond:
                self.snapshots.append(snap)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], Any], timeout_s: float, after: float = 0.0
    ) -> dict[str, Any]:
        """The first snapshot taken after ``after`` (a time.time()) for which ``predicate``
        is true, waiting up to ``timeout_s`` for it."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for snap in self.snapshots[seen:]:
                    if snap["t"] >= after and predicate(snap):
                        return snap
                seen = len(self.snapshots)
                if self.proc.poll() is not None:
                    raise RuntimeError("the observer exited")
                left = deadline - time.monotonic()
                if left <= 0:
                    last = self.snapshots[-1] if self.snapshots else None
                    raise TimeoutError(f"not seen within {timeout_s:.0f} s; last: {last}")
                self._cond.wait(min(left, 2.0))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def gpu_nodes(snap: dict[str, Any]) -> list[str]:
    """Ids of the alive ``gpu-worker`` nodes in a snapshot."""
    return [n for n, kind in snap.get("node_types", {}).items() if kind == nodes.GPU_WORKER]


def replicas_on(snap: dict[str, Any], deployment: str, node_ids: list[str]) -> int:
    """Alive replicas of ``deployment`` on those nodes."""
    per_node = snap.get("replicas", {}).get(deployment, {})
    return sum(count for node, count in per_node.items() if node in node_ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's directory")
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    watch(SimCluster.load(args.dir), args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
