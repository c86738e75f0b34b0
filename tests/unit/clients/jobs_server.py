"""A real jobs server for the SDK tests, without Ray: the jobs HTTP router (uvicorn) and the
jobs gRPC methods (grpc.aio) over one JobQueue on an embedded redis-server, with a worker
process running the synthetic executor (renders real PNGs, reports progress with previews)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from pathlib import Path

import grpc
import uvicorn
from fastapi import FastAPI

from tessera.common.errors import TesseraError, grpc_status, public_message
from tessera.jobs.api import build_jobs_router
from tessera.jobs.embedded import EmbeddedRedis
from tessera.jobs.grpc_handlers import JobsServicerMixin
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.v1 import generation_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Servicer(JobsServicerMixin, generation_pb2_grpc.GenerationServiceServicer):
    """The mixin's methods behind grpc.aio, domain errors mapped to status codes (what the
    gateway's edge does)."""

    def __init__(self, queue: JobQueue) -> None:
        self.job_queue = queue

    async def _unary(self, coro, context):  # noqa: ANN001, ANN202
        try:
            return await coro
        except TesseraError as e:
            await context.abort(grpc_status(e), public_message(e))

    async def SubmitJob(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self._unary(JobsServicerMixin.SubmitJob(self, request), context)

    async def GetJob(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self._unary(JobsServicerMixin.GetJob(self, request), context)

    async def CancelJob(self, request, context):  # noqa: ANN001, ANN201, N802
        return await self._unary(JobsServicerMixin.CancelJob(self, request), context)

    async def WatchJob(self, request, context):  # noqa: ANN001, ANN201, N802
        try:
            async for event in JobsServicerMixin.WatchJob(self, request):
                yield event
        except TesseraError as e:
            await context.abort(grpc_status(e), public_message(e))


class JobsServer:
    def __init__(self, steps: int = 6, step_s: float = 0.05) -> None:
        self.dir = tempfile.mkdtemp(prefix="tc-")
        self.redis = EmbeddedRedis(self.dir)
        self.config = QueueConfig(prefix=f"c{uuid.uuid4().hex[:8]}", block_s=0.3, max_attempts=2)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.executor_kwargs = {"steps": steps, "step_s": step_s, "size": 16}
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    def start(self) -> JobsServer:
        self.redis.start()
        cfg = {k: getattr(self.config, k) for k in self.config.__dataclass_fields__}
        env = dict(os.environ, PYTHONPATH=str(REPO / "services"), TESSERA_LOG_LEVEL="WARNING")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "tessera.jobs.worker", "--redis-url", self.redis.url,
             "--executor", "tessera.jobs.synthetic:SyntheticExecutor",
             "--executor-kwargs", json.dumps(self.executor_kwargs), "--concurrency", "2",
             "--queue-config", json.dumps(cfg), "--name", "sdk-test-worker"],
            env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self.thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("jobs server did not start")
        return self

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        queue = JobQueue.from_url(self.redis.url, self.config)
        app = FastAPI()
        app.include_router(build_jobs_router(lambda: queue))
        http = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.http_port, log_level="warning")
        )
        rpc = grpc.aio.server()
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(_Servicer(queue), rpc)
        rpc.add_insecure_port(self.grpc_target)
        await rpc.start()
        serving = asyncio.create_task(http.serve())
        while not http.started:
            await asyncio.sleep(0.02)
        self._ready.set()
        await self._stop.wait()
        http.should_exit = True
        await serving
        await rpc.stop(None)
        await queue.close()

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(10)
        self.worker.terminate()
        try:
            self.worker.wait(10)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.redis.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
