"""The Gateway deployment: public HTTP (FastAPI) and gRPC ingress of the `tessera` app.

It holds one handle per registered model service, composes the routes through them
(:mod:`tessera.routes.pipelines`), serves the ``GenerationService`` contract and, by forwarding,
every model service's own contract on the same port (:mod:`tessera.gateway.forwarding`).
Its HTTP app is built in the replica from this instance (:mod:`tessera.gateway.http`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health_pb2
from ray import serve

from tessera.common import metrics
from tessera.common.errors import InvalidArgument
from tessera.common.grpc_ingress import MalformedRequest
from tessera.common.serving import grpc_edge, returns
from tessera.gateway.forwarding import forward_contracts
from tessera.gateway.http import build_http_app
from tessera.gateway.observed import observed
from tessera.jobs.grpc_handlers import JobsServicerMixin
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.routes.bundle import BundleInfo
from tessera.routes.edit_requests import (
    caption_from_proto,
    captions_to_proto,
    edit_from_proto,
    stream_events,
)
from tessera.routes.handles import ModelHandles
from tessera.routes.pipelines import Pipelines
from tessera.routes.schemas import EditParams, GenerationParams, VariationParams
from tessera.routes.served import ServedModels
from tessera.v1 import generation_pb2


@forward_contracts
class GatewayService(JobsServicerMixin):
    """The gateway's behaviour; ``Gateway`` below is this class as a Serve ingress deployment
    (tests run this one in-process over local handles)."""

    def __init__(
        self,
        bundle_dir: str | Path,
        *,
        redis_url: str | None = None,
        queue_config: dict[str, Any] | None = None,  # QueueConfig fields, as the workers'
        ar_candidates: int | None = None,  # the Serve config's args.ar_candidates
        job_worker: Any = None,  # bound only so Serve deploys it; the gateway never calls it
        peers: dict[str, dict[str, Any]] | None = None,  # extra bundles (routes/served.py)
        **handles: Any,  # one per registered model service, by registry name
    ) -> None:
        self.handles = ModelHandles(**handles)
        self.info = BundleInfo.read(bundle_dir)
        self.pipelines = ServedModels(
            Pipelines(self.handles, self.info, ar_candidates), peers, ar_candidates
        )
        self.job_queue = (
            JobQueue.from_url(redis_url, QueueConfig.from_dict(queue_config)) if redis_url else None
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this in the replica after ``__init__``: the HTTP app of this gateway."""
        return build_http_app(self)

    def check_job_params(self, params: GenerationParams) -> None:
        """Reject a job that could never run before it is queued (model, route, size, the
        decoder's steps), with the synchronous path's messages."""
        self.pipelines.check_params(params)

    def check_edit_job(self, image: bytes, params: EditParams, mask: bytes | None) -> None:
        """Reject an edit job that could never run before it is queued: model, a mixed-modal
        component, size, and the source image and mask (PNGs of the model's size)."""
        self.pipelines.for_model(params.model).check_edit(image, params, mask)

    # ------------------------------------------------------------ gRPC: GenerationService
    @grpc_edge
    @returns(generation_pb2.GenerateResponse)
    async def Generate(
        self, request: generation_pb2.GenerateRequest, grpc_context: Any = None
    ) -> generation_pb2.GenerateResponse:
        params = GenerationParams.from_proto(request)
        async with observed(params.route, "grpc"):
            res = await self.pipelines.generate(params)
            metrics.add_images(params.route, len(res.images))
            return res

    @grpc_edge
    async def GenerateStream(
        self, request: generation_pb2.GenerateStreamRequest, grpc_context: Any = None
    ) -> AsyncIterator[generation_pb2.GenerateStreamResponse]:
        params = GenerationParams.from_proto(request.request)
        async with observed(params.route, "grpc"):
            async for event in self.pipelines.stream(params):
                yield event

    @grpc_edge
    @returns(generation_pb2.VariationsResponse)
    async def Variations(
        self, request: generation_pb2.VariationsRequest, grpc_context: Any = None
    ) -> generation_pb2.VariationsResponse:
        params = VariationParams.from_proto(request)
        async with observed("variations", "grpc"):
            result = await self.pipelines.variations(request.image, params)
            return generation_pb2.VariationsResponse(result=result)

    @grpc_edge
    @returns(generation_pb2.EditResponse)
    async def Edit(
        self, request: generation_pb2.EditRequest, grpc_context: Any = None
    ) -> generation_pb2.EditResponse:
        image, params, mask = edit_from_proto(request)
        async with observed("edit", "grpc"):
            result = await self.pipelines.edit(image, params, mask)
            metrics.add_images("edit", len(result.images))
            return generation_pb2.EditResponse(result=result)

    @grpc_edge
    async def EditStream(
        self, request: generation_pb2.EditStreamRequest, grpc_context: Any = None
    ) -> AsyncIterator[generation_pb2.EditStreamResponse]:
        image, params, mask = edit_from_proto(request.request)

        async def run(on_event: Any) -> generation_pb2.GenerateResponse:
            return await self.pipelines.edit(image, params, mask, on_event)

        async with observed("edit", "grpc"):
            async for event in stream_events(run):
                out = generation_pb2.EditStreamResponse(
                    progress=event.progress, previews=event.previews
                )
                if event.HasField("result"):
                    out.result.CopyFrom(event.result)
                yield out

    @grpc_edge
    @returns(generation_pb2.CaptionResponse)
    async def Caption(
        self, request: generation_pb2.CaptionRequest, grpc_context: Any = None
    ) -> generation_pb2.CaptionResponse:
        params = caption_from_proto(request)
        async with observed("caption", "grpc"):
            start = time.perf_counter()
            captions = await self.pipelines.caption(request.image, params)
            name = self.pipelines.for_model(params.model).info.name
            return captions_to_proto(captions, name, (time.perf_counter() - start) * 1000)

    @grpc_edge
    @returns(generation_pb2.ListModelsResponse)
    async def ListModels(
        self, request: generation_pb2.ListModelsRequest, grpc_context: Any = None
    ) -> generation_pb2.ListModelsResponse:
        models = [
            generation_pb2.ModelInfo(
                id=i.name, routes=list(i.routes), image_size=i.image_size, edits=i.edits
            )
            for i in self.pipelines.infos
        ]
        return generation_pb2.ListModelsResponse(models=models)

    # ------------------------------------------------------------------ gRPC: jobs
    # The mixin's methods raise domain errors; at the public edge they become status codes.
    SubmitJob = grpc_edge(returns(generation_pb2.SubmitJobResponse)(JobsServicerMixin.SubmitJob))
    GetJob = grpc_edge(returns(generation_pb2.GetJobResponse)(JobsServicerMixin.GetJob))
    CancelJob = grpc_edge(returns(generation_pb2.CancelJobResponse)(JobsServicerMixin.CancelJob))
    WatchJob = grpc_edge(JobsServicerMixin.WatchJob)

    # ------------------------------------------------------------------ gRPC: health
    # grpc.health.v1, open without a key: SERVING once the gateway runs (model readiness is
    # /readyz). All three methods: the servicer the proxy registers has them all, and one
    # missing here was an INTERNAL (the fuzz suite's finding).
    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: Any = None
    ) -> health_pb2.HealthCheckResponse:
        """SERVING for the server ("") and for every service the port serves."""
        if not _health_request_ok(request, grpc_context):
            return health_pb2.HealthCheckResponse()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, grpc_context: Any = None
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The current status, once (the gateway does not change it while it runs)."""
        if not _health_request_ok(request, grpc_context):
            # Raise, not return: a Serve stream that ends with no message may lose the
            # replica's "accepted" metadata and reach the client as INTERNAL (Ray's own note in
            # replica.py); a raised error travels as a message and keeps the code set above.
            raise InvalidArgument(request.describe())
        yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    async def List(
        self, request: health_pb2.HealthListRequest, grpc_context: Any = None
    ) -> health_pb2.HealthListResponse:
        if not _health_request_ok(request, grpc_context):
            return health_pb2.HealthListResponse()
        serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
        return health_pb2.HealthListResponse(statuses={"": serving})


def _health_request_ok(request: Any, grpc_context: Any) -> bool:
    """A health payload the proxy could not parse is INVALID_ARGUMENT (health methods are not
    ``grpc_edge`` methods: they stay open without an API key)."""
    if isinstance(request, MalformedRequest):
        grpc_context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        grpc_context.set_details(request.describe())
        return False
    return True


Gateway = serve.deployment(
    serve.ingress()(GatewayService),
    name="Gateway",
    ray_actor_options={"num_cpus": 0.1},
    max_ongoing_requests=64,
)

__all__ = ["Gateway", "GatewayService"]
