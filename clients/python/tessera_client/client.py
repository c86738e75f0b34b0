"""``Client``: the synchronous SDK client, one interface over HTTP (httpx) or gRPC (grpcio).

Each method builds its call once (:mod:`tessera_client._wire`) and hands it to the transport,
so ``Client`` and its asyncio twin (:mod:`tessera_client.async_client`) differ only in
``await``, and the two transports only in how bytes move.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal, Unpack

from tessera_client import _edits, _wire
from tessera_client._grpc import GRPCTransport
from tessera_client._http import HTTPTransport
from tessera_client._settings import DEFAULT_TIMEOUT, Settings, final_result
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

__all__ = [
    "Client",
    "DEFAULT_TIMEOUT",
    "CaptionOptions",
    "EditOptions",
    "GenerationOptions",
    "VariationOptions",
]


class Client(Settings):
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
                    yield final_result(event, fetched)
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
