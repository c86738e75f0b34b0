"""``AsyncClient``: the asyncio twin of :class:`tessera_client.client.Client`, method for
method (the calls are built by the same :mod:`tessera_client._wire` functions).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Unpack

from tessera_client import _edits, _wire
from tessera_client._grpc import AsyncGRPCTransport
from tessera_client._http import AsyncHTTPTransport
from tessera_client._settings import Settings, final_result
from tessera_client._wire import ImageInput
from tessera_client.options import CaptionOptions, EditOptions, GenerationOptions, VariationOptions
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

__all__ = ["AsyncClient"]


class AsyncClient(Settings):
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
                    yield final_result(event, fetched)
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
