"""`tessera serve`: run the whole platform locally until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import get_args

from tessera.common.settings import Ingress, get_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    s = get_settings()
    parser.add_argument("--config", type=Path, default=s.serve_config, help="Serve config YAML")
    parser.add_argument("--host", default=s.host, help="bind address (default: localhost)")
    parser.add_argument("--http-port", type=int, default=s.http_port)
    parser.add_argument("--grpc-port", type=int, default=s.grpc_port)
    parser.add_argument("--metrics-port", type=int, default=s.metrics_port)
    parser.add_argument(
        "--bundle", default=None, help="bundle name under models/ (default: settings)"
    )
    parser.add_argument("--bundle-dir", default=None, help="explicit bundle directory")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="BUNDLE",
        help="serve another bundle too (a path or a name under models/; repeatable): requests "
        "pick it with `model`, e.g. an imported Kandinsky 2.2 (`tessera models import`)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: from the config)")
    parser.add_argument(
        "--handle-transport",
        choices=("grpc", "default"),
        default="grpc",
        help="how deployments call each other (default: gRPC)",
    )
    parser.add_argument(
        "--ingress",
        choices=get_args(Ingress),
        default=s.ingress,
        help="who takes requests on the public ports: the one Gateway replica itself (direct, "
        "the default: one hop less per request) or Serve's proxy (a Gateway that scales)",
    )


def run(args: argparse.Namespace) -> int:
    from tessera import runtime
    from tessera.common.logging import setup_logging

    setup_logging()
    app_args = {
        k: v
        for k, v in (
            ("bundle", args.bundle),
            ("bundle_dir", args.bundle_dir),
            ("device", args.device),
        )
        if v
    }
    if args.also:
        app_args["extra_bundles"] = list(args.also)
    config = runtime.StackConfig(
        serve_config=args.config,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        app_args=app_args,
        grpc_handles=args.handle_transport == "grpc",
        ingress=args.ingress,
    )
    endpoints = runtime.start(config)
    print("Tessera is ready:", flush=True)
    print(f"  HTTP     {endpoints['http']}   (OpenAPI: {endpoints['http']}/docs)", flush=True)
    print(f"  gRPC     {endpoints['grpc']}", flush=True)
    if "metrics" in endpoints:
        print(f"  metrics  {endpoints['metrics']}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("shutting down…", flush=True)
    runtime.stop()
    return 0
