"""The jobs half of the public gRPC ``GenerationService``, as a mixin.

The gateway's servicer class inherits ``JobsServicerMixin`` and sets ``self.job_queue``
(a ``tessera.jobs.queue.JobQueue``); if it also defines ``check_job_params(params)``, that
runs before a job is enqueued. Methods take the request message, return (or, for
``WatchJob``, yield) response messages, and raise ``tessera.common.errors`` exceptions; the
gateway wraps each with ``grpc_edge``, which maps them to gRPC status codes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tessera.common.errors import InvalidArgument, Unavailable
from tessera.jobs.queue import JobQueue
from tessera.jobs.redis_retry import store_errors
from tessera.routes.edit_requests import EditJobRequest, edit_from_proto
from tessera.routes.schemas import GenerationParams
from tessera.v1 import generation_pb2


class JobsServicerMixin:
    """SubmitJob, GetJob, CancelJob and WatchJob over ``self.job_queue``."""

    job_queue: JobQueue | None = None

    def require_job_queue(self) -> JobQueue:
        """The job queue, or Unavailable when this server runs without Redis."""
        if self.job_queue is None:
            raise Unavailable("async jobs are not configured on this server (no Redis URL)")
        return self.job_queue

    async def SubmitJob(  # noqa: N802
        self, request: generation_pb2.SubmitJobRequest, grpc_context: Any = None
    ) -> generation_pb2.SubmitJobResponse:
        if request.HasField("edit"):
            if request.HasField("request"):
                raise InvalidArgument("set either request or edit, not both")
            params = self._edit_job(request.edit)
        elif not request.HasField("request"):
            raise InvalidArgument("request (or edit) is required")
        else:
            params = GenerationParams.from_proto(request.request)
            check = getattr(self, "check_job_params", None)
            if check is not None:  # the gateway's model/route/size checks, before enqueueing
                check(params)
        with store_errors():
            job = await self.require_job_queue().submit(
                params,
                priority=request.priority or "normal",
                idempotency_key=request.idempotency_key or None,
            )
        return generation_pb2.SubmitJobResponse(job=job.to_proto())

    def _edit_job(self, msg: generation_pb2.EditRequest) -> EditJobRequest:
        """An edit job's payload, checked as the synchronous Edit is before it is queued."""
        image, params, mask = edit_from_proto(msg)
        check = getattr(self, "check_edit_job", None)
        if check is not None:
            check(image, params, mask)
        return EditJobRequest.build(image, params, mask)

    async def GetJob(  # noqa: N802
        self, request: generation_pb2.GetJobRequest, grpc_context: Any = None
    ) -> generation_pb2.GetJobResponse:
        with store_errors():
            job = await self.require_job_queue().get(request.id)
        return generation_pb2.GetJobResponse(job=job.to_proto())

    async def CancelJob(  # noqa: N802
        self, request: generation_pb2.CancelJobRequest, grpc_context: Any = None
    ) -> generation_pb2.CancelJobResponse:
        with store_errors():
            job = await self.require_job_queue().cancel(request.id)
        return generation_pb2.CancelJobResponse(job=job.to_proto())

    async def WatchJob(  # noqa: N802
        self, request: generation_pb2.WatchJobRequest, grpc_context: Any = None
    ) -> AsyncIterator[generation_pb2.WatchJobResponse]:
        """A snapshot, then one event per progress step/state change; the last one carries
        the finished job (with its result when it succeeded)."""
        queue = self.require_job_queue()
        with store_errors():
            async for update in queue.watch(request.id):
                yield update.to_proto()
