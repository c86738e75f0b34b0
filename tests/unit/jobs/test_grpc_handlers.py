"""JobsServicerMixin: the gRPC job methods against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tessera.common.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from tessera.common.serving import grpc_edge
from tessera.jobs.grpc_handlers import JobsServicerMixin
from tessera.jobs.queue import JobQueue
from tessera.jobs.synthetic import SyntheticExecutor, expected_png
from tessera.jobs.worker import Worker
from tessera.v1 import generation_pb2, generation_pb2_grpc

from .conftest import config, open_queue


class Servicer(JobsServicerMixin):
    def __init__(self, queue):
        self.job_queue = queue


def submit_request(prompt: str, **kw) -> generation_pb2.SubmitJobRequest:
    return generation_pb2.SubmitJobRequest(
        request=generation_pb2.GenerateRequest(prompt=prompt, seed=3, steps=3), **kw
    )


async def test_submit_watch_get_cancel(redis_url):
    async with open_queue(redis_url) as q:
        svc = Servicer(q)
        job = (await svc.SubmitJob(submit_request("grpc job", priority="high"))).job
        assert job.state == "queued" and job.priority == "high" and len(job.id) == 32
        same = (
            await svc.SubmitJob(submit_request("grpc job", priority="high", idempotency_key="k"))
        ).job
        again = (
            await svc.SubmitJob(submit_request("grpc job", priority="high", idempotency_key="k"))
        ).job
        assert same.id == again.id != job.id
        with pytest.raises(AlreadyExists):
            await svc.SubmitJob(submit_request("other", idempotency_key="k"))
        cancelled = (await svc.CancelJob(generation_pb2.CancelJobRequest(id=same.id))).job
        assert cancelled.state == "cancelled"

        worker = Worker(q, SyntheticExecutor(step_s=0.01))
        task = asyncio.create_task(worker.run())
        try:
            events = [e async for e in svc.WatchJob(generation_pb2.WatchJobRequest(id=job.id))]
        finally:
            worker.stop()
            await task
        steps = [e.job.progress.step for e in events if e.previews]
        assert steps == [1, 2, 3]
        last = events[-1].job
        assert last.state == "succeeded" and last.result.images[0].png == expected_png(
            "grpc job", 3
        )
        got = (await svc.GetJob(generation_pb2.GetJobRequest(id=job.id))).job
        assert got.state == "succeeded" and got.result_expires_at > got.finished_at > 0


async def test_errors(redis_url):
    async with open_queue(redis_url) as q:
        svc = Servicer(q)
        with pytest.raises(InvalidArgument):
            await svc.SubmitJob(generation_pb2.SubmitJobRequest())
        with pytest.raises(InvalidArgument):
            await svc.SubmitJob(submit_request(""))
        with pytest.raises(InvalidArgument):
            await svc.SubmitJob(submit_request("x", priority="asap"))
        with pytest.raises(NotFound):
            await svc.GetJob(generation_pb2.GetJobRequest(id="b" * 32))
        with pytest.raises(NotFound):
            await svc.CancelJob(generation_pb2.CancelJobRequest(id="nope"))
        with pytest.raises(NotFound):
            [e async for e in svc.WatchJob(generation_pb2.WatchJobRequest(id="c" * 32))]
    with pytest.raises(Unavailable):
        await JobsServicerMixin().GetJob(generation_pb2.GetJobRequest(id="a" * 32))


class EdgeServicer(generation_pb2_grpc.GenerationServiceServicer, JobsServicerMixin):
    """SubmitJob behind the public gRPC edge, on a real grpc.aio server."""

    def __init__(self, queue: JobQueue) -> None:
        self.job_queue = queue

    @grpc_edge
    async def SubmitJob(self, request: Any, grpc_context: Any) -> Any:  # noqa: N802
        return await JobsServicerMixin.SubmitJob(self, request, grpc_context)


async def test_redis_down_is_unavailable_with_retry_after_metadata():
    queue = JobQueue.from_url("unix:///tmp/tessera-no-such-redis.sock", config())
    server = grpc.aio.server()
    generation_pb2_grpc.add_GenerationServiceServicer_to_server(EdgeServicer(queue), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = generation_pb2_grpc.GenerationServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SubmitJob(submit_request("x"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ("retry-after", "1") in tuple(err.value.trailing_metadata())
    finally:
        await server.stop(None)
        await queue.close()
