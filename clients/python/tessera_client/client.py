"""``Client`` and ``AsyncClient``: one interface over HTTP (httpx) or gRPC (grpcio).

Each method builds its call once (:mod:`tessera_client._wire`) and hands it to the transport,
so the two clients differ only in ``await``, and the two transports only in how bytes move.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Literal, TypedDict, Unpack

import grpc

from tessera_client import _edits, _wire
from tessera_client._grpc import AsyncGRPCTransport, GRPCTransport
from tessera_client._http import AsyncHTTPTransport, HTTPTransport
from tessera_client._retry import RetryPolicy
from tessera_client._wire import ImageInput
from tessera_client.errors import JobFailed
from tessera_client.types import (
    Captions,
    Embeddings,
    GeneratedImages,
    Images,
    Job,
    Latent,
    ModelInfo,
    ProgressEvent,
    TokenGrid,
    Tokenization,
)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_GRPC_TARGET = "127.0.0.1:9000"
DEFAULT_TIMEOUT = 60.0
Transport = Literal["http", "grpc"]


class GenerationOptions(TypedDict, total=False):
    """Optional generation fields; unset ones take the server's defaults. The bounds are the
    server's public limits (copied in :mod:`tessera_client._limits`)."""

    route: str  # "ar" (default), "unclip", "pixel" or "mixed"
    n: int  # images, 1..MAX_IMAGES_PER_REQUEST
    size: str  # "WxH": the native size or an integer upscale
    seed: int  # image i uses seed + i; unset: random (returned in the result)
    guidance_scale: float  # [0, MAX_GUIDANCE]
    steps: int  # unclip denoising steps, 1..MAX_STEPS
    temperature: float  # ar, pixel: (0, MAX_TEMPERATURE]
    top_k: int  # ar 0..MAX_TOP_K, pixel 0..MAX_PIXEL_TOP_K; 0 = off
    top_p: float  # ar, pixel: (0, 1]
    candidates: int  # ar, 1..MAX_CANDIDATES: sampled per image; CLIP's best is returned
    model: str  # bundle name; unset: the served default


class VariationOptions(TypedDict, total=False):
    n: int
    size: str
    seed: int
    guidance_scale: float
    steps: int
    model: str


class EditOptions(TypedDict, total=False):
    """Optional edit fields (the mixed-modal model); unset ones take the server's defaults."""

    n: int  # edited images, 1..MAX_IMAGES_PER_REQUEST
    size: str  # "WxH": the native size or an integer upscale
    model: str  # bundle name; unset: the served default
    seed: int
    guidance_scale: float  # on the instruction, [0, MAX_GUIDANCE]
    image_guidance_scale: float  # on the source image, [0, MAX_GUIDANCE]
    temperature: float  # (0, MAX_TEMPERATURE]; unset: greedy
    top_k: int  # 0 = off


class CaptionOptions(TypedDict, total=False):
    model: str
    temperature: float  # unset or 0: greedy (one caption); n > 1 needs temperature > 0
    seed: int


def _final_result(event: ProgressEvent, fetched: Job | None = None) -> ProgressEvent:
    """The last event of a job run as a generation: its images, or JobFailed."""
    job = fetched or event.job
    if job is None or job.state != "succeeded" or job.result is None:
        state = job.state if job else "unknown"
        reason = (job.error if job else None) or f"job ended {state}"
        raise JobFailed(f"job {event.job_id} {state}: {reason}", job=job, code=state)
    return event.model_copy(update={"result": job.result})


class _Settings:
    """Constructor arguments and environment, resolved once for both clients."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        transport: Transport = "http",
        grpc_target: str | None = None,
        api_key: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        retry: RetryPolicy | None = None,
        grpc_credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        if transport not in ("http", "grpc"):
            raise ValueError(f"transport must be 'http' or 'grpc', not {transport!r}")
        self.transport: Transport = transport
        self.base_url = base_url or os.environ.get("TESSERA_URL") or DEFAULT_URL
        self.grpc_target = (
            grpc_target or os.environ.get("TESSERA_GRPC_TARGET") or DEFAULT_GRPC_TARGET
        )
        self.timeout = timeout
        self.retry = retry or RetryPolicy(max_retries=max_retries)
        key = api_key if api_key is not None else os.environ.get("TESSERA_API_KEY") or None
        common = {"api_key": key, "policy": self.retry, "rng": random.Random()}
        if transport == "http":
            self._transport = self._http_transport(self.base_url, read_timeout=timeout, **common)
        else:
            self._transport = self._grpc_transport(
                self.grpc_target, credentials=grpc_credentials, **common
            )

    def _t(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def __repr__(self) -> str:
        where = self.base_url if self.transport == "http" else self.grpc_target
        return f"{type(self).__name__}({self.transport}: {where})"


class Client(_Settings):
    """Synchronous client.

    ``Client(base_url=None, *, transport="http" | "grpc", grpc_target=None, api_key=None,
    timeout=60.0, max_retries=3, retry=None, grpc_credentials=None)``. Unset, ``base_url``,
    ``grpc_target`` and ``api_key`` come from ``TESSERA_URL``, ``TESSERA_GRPC_TARGET`` and
    ``TESSERA_API_KEY``. ``timeout`` is each call's deadline in seconds (retries included);
    every method takes ``timeout=`` to override it. Use as a context manager, or ``close()``.
    """

    _http_transport = HTTPTransport
    _grpc_transport = GRPCTransport

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def generate(
        self, prompt: str, *, timeout: float | None = None, **params: Unpack[GenerationOptions]
    ) -> GeneratedImages:
        """Images for a prompt through one route (``ar``, ``unclip`` or ``pixel``)."""
        call = _wire.generate(_wire.generation_fields(prompt, **params))
        return self._transport.unary(call, self._t(timeout))

    def variations(
        self, image: ImageInput, *, timeout: float | None = None, **params: Unpack[VariationOptions]
    ) -> GeneratedImages:
        """Variations of an image (PNG bytes, a PIL image or a file path)."""
        call = _wire.variations(image, _wire.variation_fields(**params))
        return self._transport.unary(call, self._t(timeout))

    def edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> GeneratedImages:
        """Edit an image (PNG bytes, a PIL image or a path; the model's native size) by an
        instruction. ``mask``: a PNG of the same size whose transparent pixels mark where the
        image may change (everything else stays the source's)."""
        call = _edits.edit(_edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params)))
        return self._transport.unary(call, self._t(timeout))

    def submit_edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        priority: Literal["normal", "high"] = "normal",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> Job:
        """Queue an async edit job (``stream`` / ``wait`` follow it as any job)."""
        inputs = _edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params))
        call = _edits.submit_edit(inputs, priority, idempotency_key)
        return self._transport.unary(call, self._t(timeout))

    def edit_stream(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> Iterator[ProgressEvent]:
        """``edit`` with progress events (previews); the last event's ``result`` holds the
        images. gRPC: the EditStream RPC; HTTP: an edit job and its event stream."""
        inputs = _edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params))
        if self.transport == "grpc":
            yield from self._transport.stream(_edits.edit_stream(inputs), timeout)
            return
        job = self._transport.unary(_edits.submit_edit(inputs, "normal", None), self._t(timeout))
        yield from self._follow(job, timeout)

    def caption(
        self,
        image: ImageInput,
        *,
        n: int = 1,
        timeout: float | None = None,
        **params: Unpack[CaptionOptions],
    ) -> Captions:
        """``n`` captions of an image, best first, each with its score."""
        call = _edits.caption(image, _edits.caption_fields(n=n, **params))
        return self._transport.unary(call, self._t(timeout))

    def submit(
        self,
        prompt: str,
        *,
        priority: Literal["normal", "high"] = "normal",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        **params: Unpack[GenerationOptions],
    ) -> Job:
        """Queue an async generation job. Without ``idempotency_key`` a fresh one is made per
        call, so this call's own retries can never create a second job."""
        call = _wire.submit(_wire.generation_fields(prompt, **params), priority, idempotency_key)
        return self._transport.unary(call, self._t(timeout))

    def job(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self._transport.unary(_wire.get_job(job_id), self._t(timeout))

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self._transport.unary(_wire.cancel_job(job_id), self._t(timeout))

    def stream(self, job_id: str, *, timeout: float | None = None) -> Iterator[ProgressEvent]:
        """Progress events of a job (with previews) until it ends; the last has ``done`` and
        ``job``. ``timeout`` bounds the whole stream (default: none)."""
        return self._transport.stream(_wire.watch_job(job_id), timeout)

    def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Block until the job ends; returns it (whatever its final state)."""
        for event in self.stream(job_id, timeout=timeout):
            if event.done and event.job is not None:
                return event.job
        return self.job(job_id)

    def generate_stream(
        self, prompt: str, *, timeout: float | None = None, **params: Unpack[GenerationOptions]
    ) -> Iterator[ProgressEvent]:
        """``generate`` with progress events; the last event's ``result`` holds the images.
        gRPC: the GenerateStream RPC. HTTP: a job and its event stream (cancelled if the
        caller stops early); a job that fails raises ``JobFailed``."""
        fields = _wire.generation_fields(prompt, **params)
        if self.transport == "grpc":
            yield from self._transport.stream(_wire.generate_stream(fields), timeout)
            return
        job = self.submit(prompt, timeout=timeout, **params)
        yield from self._follow(job, timeout)

    def _follow(self, job: Job, timeout: float | None) -> Iterator[ProgressEvent]:
        """A submitted job's events as a generation's stream (cancelled if left early)."""
        finished = False
        try:
            for event in self.stream(job.id, timeout=timeout):
                if event.done:
                    finished = True
                    fetched = None if event.job and event.job.result else self.job(job.id)
                    yield _final_result(event, fetched)
                    return
                yield event
        finally:
            if not finished:
                self._cancel_quietly(job.id)

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id, timeout=5)
        except Exception:  # noqa: BLE001 - best effort; the caller's error matters more
            pass

    def tokenize(
        self,
        images: Sequence[ImageInput],
        *,
        resize: bool = True,
        return_latents: bool = False,
        timeout: float | None = None,
    ) -> Tokenization:
        """Images → token grids (and the quantized latents with ``return_latents``)."""
        call = _wire.tokenize(images, resize, return_latents)
        return self._transport.unary(call, self._t(timeout))

    def detokenize(
        self,
        grids: Sequence[TokenGrid | dict] = (),
        *,
        latents: Sequence[Latent | dict] = (),
        quantize: bool = True,
        timeout: float | None = None,
    ) -> Images:
        """Token grids (or latents) → images."""
        call = _wire.detokenize(grids, latents, quantize)
        return self._transport.unary(call, self._t(timeout))

    def embed(
        self,
        texts: Sequence[str] | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        timeout: float | None = None,
    ) -> Embeddings:
        """CLIP embeddings of texts or of images (one of the two)."""
        call = _wire.embed(texts, images)
        return self._transport.unary(call, self._t(timeout))

    def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        return self._transport.unary(_wire.list_models(), self._t(timeout))


class AsyncClient(_Settings):
    """The asyncio twin of :class:`Client`: same arguments, same methods, awaited
    (``stream`` and ``generate_stream`` are async iterators)."""

    _http_transport = AsyncHTTPTransport
    _grpc_transport = AsyncGRPCTransport

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def generate(
        self, prompt: str, *, timeout: float | None = None, **params: Unpack[GenerationOptions]
    ) -> GeneratedImages:
        call = _wire.generate(_wire.generation_fields(prompt, **params))
        return await self._transport.unary(call, self._t(timeout))

    async def variations(
        self, image: ImageInput, *, timeout: float | None = None, **params: Unpack[VariationOptions]
    ) -> GeneratedImages:
        call = _wire.variations(image, _wire.variation_fields(**params))
        return await self._transport.unary(call, self._t(timeout))

    async def edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> GeneratedImages:
        call = _edits.edit(_edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params)))
        return await self._transport.unary(call, self._t(timeout))

    async def submit_edit(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        priority: Literal["normal", "high"] = "normal",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> Job:
        inputs = _edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params))
        call = _edits.submit_edit(inputs, priority, idempotency_key)
        return await self._transport.unary(call, self._t(timeout))

    async def edit_stream(
        self,
        image: ImageInput,
        prompt: str,
        mask: ImageInput | None = None,
        *,
        timeout: float | None = None,
        **params: Unpack[EditOptions],
    ) -> AsyncIterator[ProgressEvent]:
        inputs = _edits.EditInputs(image, prompt, mask, _edits.edit_fields(**params))
        if self.transport == "grpc":
            async for event in self._transport.stream(_edits.edit_stream(inputs), timeout):
                yield event
            return
        call = _edits.submit_edit(inputs, "normal", None)
        job = await self._transport.unary(call, self._t(timeout))
        async for event in self._follow(job, timeout):
            yield event

    async def caption(
        self,
        image: ImageInput,
        *,
        n: int = 1,
        timeout: float | None = None,
        **params: Unpack[CaptionOptions],
    ) -> Captions:
        call = _edits.caption(image, _edits.caption_fields(n=n, **params))
        return await self._transport.unary(call, self._t(timeout))

    async def submit(
        self,
        prompt: str,
        *,
        priority: Literal["normal", "high"] = "normal",
        idempotency_key: str | None = None,
        timeout: float | None = None,
        **params: Unpack[GenerationOptions],
    ) -> Job:
        call = _wire.submit(_wire.generation_fields(prompt, **params), priority, idempotency_key)
        return await self._transport.unary(call, self._t(timeout))

    async def job(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self._transport.unary(_wire.get_job(job_id), self._t(timeout))

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self._transport.unary(_wire.cancel_job(job_id), self._t(timeout))

    def stream(self, job_id: str, *, timeout: float | None = None) -> AsyncIterator[ProgressEvent]:
        return self._transport.stream(_wire.watch_job(job_id), timeout)

    async def wait(self, job_id: str, *, timeout: float | None = None) -> Job:
        async for event in self.stream(job_id, timeout=timeout):
            if event.done and event.job is not None:
                return event.job
        return await self.job(job_id)

    async def generate_stream(
        self, prompt: str, *, timeout: float | None = None, **params: Unpack[GenerationOptions]
    ) -> AsyncIterator[ProgressEvent]:
        fields = _wire.generation_fields(prompt, **params)
        if self.transport == "grpc":
            async for event in self._transport.stream(_wire.generate_stream(fields), timeout):
                yield event
            return
        job = await self.submit(prompt, timeout=timeout, **params)
        async for event in self._follow(job, timeout):
            yield event

    async def _follow(self, job: Job, timeout: float | None) -> AsyncIterator[ProgressEvent]:
        finished = False
        try:
            async for event in self.stream(job.id, timeout=timeout):
                if event.done:
                    finished = True
                    fetched = None if event.job and event.job.result else await self.job(job.id)
                    yield _final_result(event, fetched)
                    return
                yield event
        finally:
            if not finished:
                await self._cancel_quietly(job.id)

    async def _cancel_quietly(self, job_id: str) -> None:
        try:
            await self.cancel(job_id, timeout=5)
        except Exception:  # noqa: BLE001 - best effort; the caller's error matters more
            pass

    async def tokenize(
        self,
        images: Sequence[ImageInput],
        *,
        resize: bool = True,
        return_latents: bool = False,
        timeout: float | None = None,
    ) -> Tokenization:
        call = _wire.tokenize(images, resize, return_latents)
        return await self._transport.unary(call, self._t(timeout))

    async def detokenize(
        self,
        grids: Sequence[TokenGrid | dict] = (),
        *,
        latents: Sequence[Latent | dict] = (),
        quantize: bool = True,
        timeout: float | None = None,
    ) -> Images:
        call = _wire.detokenize(grids, latents, quantize)
        return await self._transport.unary(call, self._t(timeout))

    async def embed(
        self,
        texts: Sequence[str] | None = None,
        *,
        images: Sequence[ImageInput] | None = None,
        timeout: float | None = None,
    ) -> Embeddings:
        call = _wire.embed(texts, images)
        return await self._transport.unary(call, self._t(timeout))

    async def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        return await self._transport.unary(_wire.list_models(), self._t(timeout))
