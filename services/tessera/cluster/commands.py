"""``tessera cluster up|down|status|kill-node``: a simulated autoscaling cluster on this
machine (Ray's fake_multinode provider) with Tessera deployed on it. See ``sim.py``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_DIR = Path("/tmp/tessera-cluster")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tessera.cluster.sim import DEFAULT_SERVE_CONFIG

    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help=f"the cluster's directory ({DEFAULT_DIR})"
    )
    command = parser.get_default("_command")
    if command == "up":
        parser.add_argument("--config", type=Path, default=DEFAULT_SERVE_CONFIG)
        parser.add_argument("--http-port", type=int, default=8000)
        parser.add_argument("--grpc-port", type=int, default=9000)
        parser.add_argument("--bundle", default=None, help="bundle name under models/")
        parser.add_argument("--bundle-dir", default=None, help="explicit bundle directory")
    elif command == "kill-node":
        parser.add_argument("node_id", help="the worker node's id (see `tessera cluster status`)")


def run(args: argparse.Namespace) -> int:
    from tessera.cluster import sim

    command = args._command
    if command == "up":
        app_args = {
            k: v for k, v in (("bundle", args.bundle), ("bundle_dir", args.bundle_dir)) if v
        }
        cluster = sim.up(
            args.dir,
            serve_config=args.config,
            app_args=app_args,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
        )
        print(
            f"cluster up: GCS {cluster.gcs_address}, HTTP {cluster.http}, "
            f"gRPC 127.0.0.1:{cluster.grpc_port}"
        )
        print(
            f"  metrics: Ray http://127.0.0.1:{cluster.metrics_port}/metrics, autoscaler "
            f"http://127.0.0.1:{cluster.autoscaler_metrics_port}/metrics"
        )
        print(f"  watch:   python -m tessera.cluster.observe --dir {args.dir}")
        print(f"  stop:    tessera cluster down --dir {args.dir}")
        return 0
    if command == "down":
        ended = sim.down(args.dir)
        print(f"cluster down: {ended} processes ended")
        return 0
    if command == "status":
        import ray

        from tessera.cluster.observe import snapshot

        cluster = sim.SimCluster.load(args.dir)
        ray.init(address=cluster.gcs_address, log_to_driver=False, logging_level="WARNING")
        print(json.dumps(snapshot(cluster), indent=2))
        return 0
    if command == "kill-node":
        pids = sim.kill_node(args.dir, args.node_id)
        print(f"killed node {args.node_id}: pids {pids}")
        return 0
    raise SystemExit(f"unknown cluster command {command!r}")
