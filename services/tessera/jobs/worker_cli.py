"""The job worker's command line: ``python -m tessera.jobs.worker --redis-url URL
[--bundle-dir DIR]`` runs the real routes over the bundle's models loaded in this process;
``--executor module:attr`` (e.g. ``tessera.jobs.synthetic:SyntheticExecutor``) another
executor."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from typing import Any

from tessera.jobs.executors import LOCAL_ROUTES, SYNTHETIC, build_executor
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.jobs.worker import Worker


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None, help="default: TESSERA_REDIS_URL/embedded")
    parser.add_argument(
        "--executor",
        default=LOCAL_ROUTES,
        help="module:attr of the executor or its factory (default: the real routes over the "
        f"models of --bundle-dir, loaded in this process; {SYNTHETIC} makes fake images)",
    )
    parser.add_argument("--executor-kwargs", default="{}", help="JSON kwargs for the factory")
    parser.add_argument(
        "--bundle-dir", default=None, help="default executor: the bundle (default: configured)"
    )
    parser.add_argument("--device", default=None, help="default executor: cpu/cuda (default: auto)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--queue-config", default="{}", help="JSON QueueConfig fields")
    parser.add_argument("--name", default=None, help="consumer name (default: host-pid-rand)")


def executor_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``--executor-kwargs``, plus the bundle and device when the executor is the default."""
    kwargs: dict[str, Any] = json.loads(args.executor_kwargs)
    if args.executor == LOCAL_ROUTES:
        from tessera.common.settings import get_settings

        kwargs.setdefault("bundle_dir", args.bundle_dir or str(get_settings().bundle_dir))
        kwargs.setdefault("device", args.device)
    elif args.bundle_dir or args.device:
        raise SystemExit(
            f"--bundle-dir and --device are arguments of {LOCAL_ROUTES}; pass those of "
            f"{args.executor} in --executor-kwargs"
        )
    return kwargs


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=os.environ.get("TESSERA_LOG_LEVEL", "INFO"))
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    executor = await build_executor(args.executor, **executor_kwargs(args))
    url = args.redis_url
    if url is None:
        from tessera.jobs.embedded import ensure_redis

        url = ensure_redis(stop_at_exit=False)
    queue = JobQueue.from_url(url, QueueConfig.from_dict(json.loads(args.queue_config)))
    worker = Worker(queue, executor, concurrency=args.concurrency, name=args.name)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await queue.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tessera.jobs.worker")
    add_arguments(parser)
    return run(parser.parse_args(argv))
