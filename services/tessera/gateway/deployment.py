"""The Gateway deployment: public HTTP (FastAPI) and gRPC ingress of the `tessera` app.

It validates requests, composes the routes through model-service handles (see
:mod:`tessera.gateway.pipelines`), forwards each model service's own gRPC methods so one port
serves every contract, and maps domain errors to HTTP / gRPC status codes.
"""

# No `from __future__ import annotations` here: Ray Serve rebuilds the FastAPI routes in the
# replica, where string annotations (Request, UploadFile) no longer resolve.

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import File, Form, UploadFile
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2
from ray import serve

from tessera.common import metrics
from tessera.common.errors import InvalidArgument, TesseraError, Unavailable, http_status
from tessera.common.serving import call, grpc_edge, returns, unwrap_error
from tessera.gateway.http import (
    DetokenizeBody,
    EmbedImageBody,
    EmbedTextBody,
    TokenizeBody,
    create_app,
    decode_b64,
    images_response,
)
from tessera.gateway.pipelines import BundleInfo, ModelHandles, Pipelines
from tessera.gateway.schemas import GenerationParams, ImagesResponse, VariationParams, validate
from tessera.jobs.api import build_jobs_router
from tessera.jobs.grpc_handlers import JobsServicerMixin
from tessera.jobs.queue import JobQueue, QueueConfig
from tessera.v1 import (
    common_pb2,
    decoder_pb2,
    generation_pb2,
    lm_pb2,
    prior_pb2,
    tokenizer_pb2,
)

app = create_app()


class _Current:
    """The replica's Gateway, for the module-level jobs router (one Gateway per process)."""

    gateway: "Gateway | None" = None


def _job_queue() -> JobQueue:
    gateway = _Current.gateway
    if gateway is None or gateway.job_queue is None:
        raise Unavailable("async jobs are not configured on this server (no Redis URL)")
    return gateway.job_queue


def _check_job(params: GenerationParams) -> None:
    if _Current.gateway is not None:
        _Current.gateway.check_job_params(params)


app.include_router(build_jobs_router(_job_queue, check=_check_job))


METRIC_ROUTES = frozenset(
    ("ar", "unclip", "variations", "tokenize", "detokenize", "embed_text", "embed_image")
)


@contextlib.asynccontextmanager
async def observed(route: str, ingress: str):  # noqa: ANN201 - async context manager
    """Count and time one public request by route, status and ingress."""
    if route not in METRIC_ROUTES:  # a client's unknown route must not become a label value
        route = "other"
    start = time.perf_counter()
    status = "200"
    try:
        yield
    except BaseException as e:
        status = (
            "499" if isinstance(e, asyncio.CancelledError) else str(http_status(unwrap_error(e)))
        )
        raise
    finally:
        metrics.record_request(route, status, ingress, time.perf_counter() - start)


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
@serve.ingress(app)
class Gateway(JobsServicerMixin):
    def __init__(
        self,
        tokenizer: Any,
        detokenizer: Any,
        lm: Any,
        prior: Any,
        decoder: Any,
        bundle_dir: str | Path,
        redis_url: str | None = None,
        queue_config: dict[str, Any] | None = None,  # QueueConfig fields, as the workers'
        job_worker: Any = None,  # bound only so Serve deploys it; the gateway never calls it
    ) -> None:
        self.handles = ModelHandles(tokenizer, detokenizer, lm, prior, decoder)
        self.info = BundleInfo.read(bundle_dir)
        self.pipelines = Pipelines(self.handles, self.info)
        self.job_queue = (
            JobQueue.from_url(redis_url, QueueConfig.from_dict(queue_config)) if redis_url else None
        )
        _Current.gateway = self

    def check_job_params(self, params: GenerationParams) -> None:
        """Reject a job that could never run before it is queued (model, route, size)."""
        self.pipelines.check_model(params.model)
        self.pipelines.check_route(params.route)
        self.pipelines.scale_for(params.size)

    # ------------------------------------------------------------------ HTTP: images
    @app.post("/v1/images/generations", response_model=ImagesResponse, tags=["images"])
    async def http_generations(self, body: GenerationParams) -> ImagesResponse:
        """OpenAI-compatible image generation (plus `route`, `seed`, sampling fields)."""
        async with observed(body.route, "http"):
            res = await self.pipelines.generate(body)
            metrics.add_images(body.route, len(res.images))
            return images_response(res, body.response_format)

    @app.post("/v1/images/variations", response_model=ImagesResponse, tags=["images"])
    async def http_variations(
        self,
        image: UploadFile = File(...),
        n: int = Form(1),
        size: str | None = Form(None),
        response_format: str = Form("b64_json"),
        model: str | None = Form(None),
        user: str | None = Form(None),
        seed: int | None = Form(None),
        guidance_scale: float | None = Form(None),
        steps: int | None = Form(None),
    ) -> ImagesResponse:
        """OpenAI-compatible variations: image → CLIP embedding → decoder → de-tokenizer."""
        async with observed("variations", "http"):
            fields = {
                "n": n,
                "size": size,
                "response_format": response_format,
                "model": model,
                "user": user,
                "seed": seed,
                "guidance_scale": guidance_scale,
                "steps": steps,
            }
            params = validate(VariationParams, {k: v for k, v in fields.items() if v is not None})
            data = await image.read(4 * 1024 * 1024 + 1)
            res = await self.pipelines.variations(data, params)
            metrics.add_images("variations", len(res.images))
            return images_response(res, params.response_format)

    # ------------------------------------------------------------------ HTTP: components
    @app.post("/v1/tokenize", tags=["components"])
    async def http_tokenize(self, body: TokenizeBody) -> dict:
        async with observed("tokenize", "http"):
            req = tokenizer_pb2.TokenizeRequest(
                images=[decode_b64(b) for b in body.images],
                resize=body.resize,
                return_latents=body.return_latents,
            )
            res = await call(self.handles.tokenizer.Tokenize, req)
            out: dict = {
                "codebook_size": res.codebook_size,
                "grids": [
                    {"tokens": list(g.tokens), "height": g.height, "width": g.width}
                    for g in res.grids
                ],
            }
            if body.return_latents:
                out["latents"] = [
                    {"values": list(z.values), "shape": list(z.shape)} for z in res.latents
                ]
            return out

    @app.post("/v1/detokenize", tags=["components"])
    async def http_detokenize(self, body: DetokenizeBody) -> dict:
        async with observed("detokenize", "http"):
            req = tokenizer_pb2.DetokenizeRequest(
                grids=[common_pb2.TokenGrid(**g.model_dump()) for g in body.grids],
                latents=[common_pb2.Tensor(**z.model_dump()) for z in body.latents],
                quantize=body.quantize,
            )
            if not req.grids and not req.latents:
                raise InvalidArgument("set grids or latents")
            res = await call(self.handles.detokenizer.Detokenize, req)
            return images_response(
                generation_pb2.GenerateResponse(images=res.images), "b64_json"
            ).model_dump(include={"data"})

    @app.post("/v1/embeddings/text", tags=["components"])
    async def http_embed_text(self, body: EmbedTextBody) -> dict:
        async with observed("embed_text", "http"):
            res = await call(
                self.handles.prior.EmbedText, prior_pb2.EmbedTextRequest(texts=body.texts)
            )
            return {
                "embeddings": [list(e.values) for e in res.embeddings],
                "dim": res.embeddings[0].dim,
            }

    @app.post("/v1/embeddings/image", tags=["components"])
    async def http_embed_image(self, body: EmbedImageBody) -> dict:
        async with observed("embed_image", "http"):
            req = prior_pb2.EmbedImageRequest(images=[decode_b64(b) for b in body.images])
            res = await call(self.handles.prior.EmbedImage, req)
            return {
                "embeddings": [list(e.values) for e in res.embeddings],
                "dim": res.embeddings[0].dim,
            }

    # ------------------------------------------------------------------ HTTP: meta
    @app.get("/v1/models", tags=["meta"])
    async def http_models(self) -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": self.info.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "tessera",
                    "routes": list(self.info.routes),
                    "image_size": self.info.image_size,
                }
            ],
        }

    @app.get("/healthz", tags=["meta"])
    async def http_healthz(self) -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["meta"])
    async def http_readyz(self) -> JSONResponse:
        """Ready when every model service answers a ping within 5 s."""
        names = ("tokenizer", "detokenizer", "lm", "prior", "decoder")
        checks = await asyncio.gather(
            *(asyncio.wait_for(getattr(self.handles, n).ping.remote(), 5) for n in names),
            return_exceptions=True,
        )
        status = {
            n: ("ok" if not isinstance(c, BaseException) else "unavailable")
            for n, c in zip(names, checks, strict=True)
        }
        ready = all(v == "ok" for v in status.values())
        return JSONResponse({"ready": ready, "services": status}, status_code=200 if ready else 503)

    # ------------------------------------------------------------------ gRPC: Generation
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
        self, request: generation_pb2.GenerateRequest, grpc_context: Any = None
    ) -> AsyncIterator[generation_pb2.GenerateEvent]:
        params = GenerationParams.from_proto(request)
        async with observed(params.route, "grpc"):
            async for event in self.pipelines.stream(params):
                yield event

    @grpc_edge
    @returns(generation_pb2.GenerateResponse)
    async def Variations(
        self, request: generation_pb2.VariationsRequest, grpc_context: Any = None
    ) -> generation_pb2.GenerateResponse:
        fields: dict = {"n": request.n or 1}
        if request.size:
            fields["size"] = request.size
        if request.model:
            fields["model"] = request.model
        for name in ("seed", "guidance_scale", "steps"):
            if request.HasField(name):
                fields[name] = getattr(request, name)
        params = validate(VariationParams, fields)
        async with observed("variations", "grpc"):
            return await self.pipelines.variations(request.image, params)

    @grpc_edge
    @returns(generation_pb2.ListModelsResponse)
    async def ListModels(
        self, request: generation_pb2.ListModelsRequest, grpc_context: Any = None
    ) -> generation_pb2.ListModelsResponse:
        info = generation_pb2.ModelInfo(
            id=self.info.name, routes=list(self.info.routes), image_size=self.info.image_size
        )
        return generation_pb2.ListModelsResponse(models=[info])

    # ------------------------------------------------------------------ gRPC: model services
    # Each model service's contract is served on the same port by forwarding to its
    # deployment; the handle carries the same protobuf message.
    @grpc_edge
    @returns(tokenizer_pb2.TokenizeResponse)
    async def Tokenize(
        self, request: tokenizer_pb2.TokenizeRequest, grpc_context: Any = None
    ) -> tokenizer_pb2.TokenizeResponse:
        return await call(self.handles.tokenizer.Tokenize, request)

    @grpc_edge
    @returns(tokenizer_pb2.DetokenizeResponse)
    async def Detokenize(
        self, request: tokenizer_pb2.DetokenizeRequest, grpc_context: Any = None
    ) -> tokenizer_pb2.DetokenizeResponse:
        return await call(self.handles.detokenizer.Detokenize, request)

    @grpc_edge
    @returns(lm_pb2.SampleTokensResponse)
    async def SampleTokens(
        self, request: lm_pb2.SampleTokensRequest, grpc_context: Any = None
    ) -> lm_pb2.SampleTokensResponse:
        return await call(self.handles.lm.SampleTokens, request)

    @grpc_edge
    async def SampleTokensStream(
        self, request: lm_pb2.SampleTokensRequest, grpc_context: Any = None
    ) -> AsyncIterator[lm_pb2.SampleTokensEvent]:
        async for event in self.handles.lm.options(stream=True).SampleTokensStream.remote(request):
            yield event

    @grpc_edge
    @returns(prior_pb2.EmbedResponse)
    async def EmbedText(
        self, request: prior_pb2.EmbedTextRequest, grpc_context: Any = None
    ) -> prior_pb2.EmbedResponse:
        return await call(self.handles.prior.EmbedText, request)

    @grpc_edge
    @returns(prior_pb2.EmbedResponse)
    async def EmbedImage(
        self, request: prior_pb2.EmbedImageRequest, grpc_context: Any = None
    ) -> prior_pb2.EmbedResponse:
        return await call(self.handles.prior.EmbedImage, request)

    @grpc_edge
    @returns(prior_pb2.SamplePriorResponse)
    async def SamplePrior(
        self, request: prior_pb2.SamplePriorRequest, grpc_context: Any = None
    ) -> prior_pb2.SamplePriorResponse:
        return await call(self.handles.prior.SamplePrior, request)

    @grpc_edge
    @returns(decoder_pb2.SampleLatentsResponse)
    async def SampleLatents(
        self, request: decoder_pb2.SampleLatentsRequest, grpc_context: Any = None
    ) -> decoder_pb2.SampleLatentsResponse:
        return await call(self.handles.decoder.SampleLatents, request)

    @grpc_edge
    async def SampleLatentsStream(
        self, request: decoder_pb2.SampleLatentsRequest, grpc_context: Any = None
    ) -> AsyncIterator[decoder_pb2.SampleLatentsEvent]:
        async for event in self.handles.decoder.options(stream=True).SampleLatentsStream.remote(
            request
        ):
            yield event

    # ------------------------------------------------------------------ gRPC: jobs
    @grpc_edge
    @returns(generation_pb2.Job)
    async def SubmitJob(
        self, request: generation_pb2.SubmitJobRequest, grpc_context: Any = None
    ) -> generation_pb2.Job:
        return await JobsServicerMixin.SubmitJob(self, request)

    @grpc_edge
    @returns(generation_pb2.Job)
    async def GetJob(
        self, request: generation_pb2.GetJobRequest, grpc_context: Any = None
    ) -> generation_pb2.Job:
        return await JobsServicerMixin.GetJob(self, request)

    @grpc_edge
    @returns(generation_pb2.Job)
    async def CancelJob(
        self, request: generation_pb2.CancelJobRequest, grpc_context: Any = None
    ) -> generation_pb2.Job:
        return await JobsServicerMixin.CancelJob(self, request)

    @grpc_edge
    async def WatchJob(
        self, request: generation_pb2.GetJobRequest, grpc_context: Any = None
    ) -> AsyncIterator[generation_pb2.JobEvent]:
        async for event in JobsServicerMixin.WatchJob(self, request):
            yield event

    # ------------------------------------------------------------------ gRPC: health
    async def Check(
        self, request: health_pb2.HealthCheckRequest, grpc_context: Any = None
    ) -> health_pb2.HealthCheckResponse:
        """grpc.health.v1: SERVING once the gateway runs (model readiness is /readyz)."""
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


__all__ = ["Gateway", "TesseraError"]
