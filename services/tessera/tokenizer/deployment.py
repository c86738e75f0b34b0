"""Tokenizer and Detokenizer deployments: the two halves of the bundle's tokenizer model.

The bundle's tokenizer may be any kind (``tokenizer/model.py``): the discrete ones (vq,
gumbel) answer with token grids and take grids or latents; a continuous ``kl`` tokenizer
answers with its latents only (no grids, ``codebook_size`` 0) and takes latents only.

Each request may carry up to MAX_ITEMS_PER_CALL images or grids; ``@serve.batch`` merges concurrent
requests into one forward pass. A bad item fails only its own request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from ray import serve

from tessera.common import metrics
from tessera.common.errors import InvalidArgument
from tessera.common.images import (
    arrays_to_tensor,
    decode_image,
    encode_png,
    pixels_to_proto,
    tensor_to_arrays,
)
from tessera.common.limits import MAX_ITEMS_PER_CALL
from tessera.common.protos import (
    check_count,
    grid_from_proto,
    grid_to_proto,
    tensor_from_proto,
    tensor_to_proto,
)
from tessera.common.serving import BatchKnobs, batched, item_slices, load_model, split_results
from tessera.v1 import common_pb2, tokenizer_pb2


def tokenize_cost(item: tuple[list, bool]) -> int:
    """A Tokenize request's batch cost: its pixels."""
    return sum(a.shape[0] * a.shape[1] for a in item[0])


def detokenize_cost(item: tuple[str, torch.Tensor, bool]) -> int:
    """A Detokenize request's batch cost: its latent cells (pixels / downsampling²)."""
    batch = item[1]
    return batch.shape[0] * batch.shape[-2] * batch.shape[-1]


class _VQService(BatchKnobs):
    """What both halves share: the bundle's VQ model, and one batched method (the only key
    of ``_batched_methods``) whose budget fits MAX_ITEMS_PER_CALL items of ``_item_cost()``."""

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        self.model, self.device = load_model(bundle_dir, "tokenizer", device)
        (method,) = self._batched_methods
        self.init_batching(**{method: MAX_ITEMS_PER_CALL * self._item_cost()})
        self.model_loaded = True

    def _item_cost(self) -> int:
        raise NotImplementedError


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=32)
class Tokenizer(_VQService):
    """PNG images → token grids (and optionally quantized latents)."""

    _batched_methods = {"_tokenize_batch": "max_batch_cost"}

    def _item_cost(self) -> int:
        return self.model.image_size**2  # pixels

    async def Tokenize(
        self, request: tokenizer_pb2.TokenizeRequest
    ) -> tokenizer_pb2.TokenizeResponse:
        check_count("images", len(request.images), 1, MAX_ITEMS_PER_CALL)
        size = self.model.image_size
        arrays = [decode_image(data, size, resize=request.resize) for data in request.images]
        return split_results(await self._tokenize_batch((arrays, request.return_latents)))

    @batched(max_batch_size=16 * 64 * 64, cost=tokenize_cost)
    async def _tokenize_batch(self, items: list[tuple[list, bool]]) -> list:
        return await asyncio.to_thread(self._tokenize_many, items)

    @torch.inference_mode()
    def _tokenize_many(self, items: list[tuple[list, bool]]) -> list:
        arrays = [a for item_arrays, _ in items for a in item_arrays]
        metrics.observe_batch("Tokenizer", len(arrays))
        x = arrays_to_tensor(arrays).to(self.device)  # (N, 3, S, S)
        discrete = getattr(self.model, "discrete", True)
        kind = getattr(self.model, "kind", "vq")
        latents = self.model.encode_latents(x)  # (N, C, h, w)
        codes = self.model.encode(x) if discrete else None  # (N, h, w)
        return [
            tokenizer_pb2.TokenizeResponse(
                grids=[grid_to_proto(g) for g in codes[rows]] if discrete else [],
                latents=[tensor_to_proto(z) for z in latents[rows]]
                if want_latents or not discrete
                else [],
                codebook_size=self.model.codebook_size,
                kind=kind,
            )
            for (_, want_latents), rows in zip(
                items, item_slices(len(arrays) for arrays, _ in items), strict=True
            )
        ]


@serve.deployment(ray_actor_options={"num_cpus": 0.2}, max_ongoing_requests=32)
class Detokenizer(_VQService):
    """Token grids or continuous latents → PNG images, or raw RGB pixels with
    ``return_pixels`` (the routes ask for those and PNG-encode only what they return)."""

    _batched_methods = {"_decode_batch": "max_batch_cost"}

    def _item_cost(self) -> int:
        return self.model.grid_size**2  # latent cells

    def _parse(self, request: tokenizer_pb2.DetokenizeRequest) -> tuple[str, torch.Tensor]:
        m = self.model
        if request.grids and request.latents:
            raise InvalidArgument("set either grids or latents, not both")
        if request.grids:
            if not getattr(m, "discrete", True):
                raise InvalidArgument(
                    f"this bundle's tokenizer is continuous (kind {m.kind!r}): it has no token "
                    "ids; send latents"
                )
            check_count("grids", len(request.grids), 1, MAX_ITEMS_PER_CALL)
            grids = [grid_from_proto(g, m.grid_size, m.codebook_size) for g in request.grids]
            return "grids", torch.stack(grids)
        check_count("latents", len(request.latents), 1, MAX_ITEMS_PER_CALL)
        shape = (m.latent_channels, m.grid_size, m.grid_size)
        latents = [tensor_from_proto(z, shape) for z in request.latents]
        return ("latents_q" if request.quantize else "latents"), torch.stack(latents)

    async def Detokenize(
        self, request: tokenizer_pb2.DetokenizeRequest
    ) -> tokenizer_pb2.DetokenizeResponse:
        kind, batch = self._parse(request)
        return split_results(await self._decode_batch((kind, batch, request.return_pixels)))

    @batched(max_batch_size=16 * 64, cost=detokenize_cost)
    async def _decode_batch(self, items: list[tuple[str, torch.Tensor, bool]]) -> list:
        return await asyncio.to_thread(self._decode_many, items)

    @torch.inference_mode()
    def _decode_many(self, items: list[tuple[str, torch.Tensor, bool]]) -> list:
        metrics.observe_batch("Detokenizer", sum(len(b) for _, b, _ in items))
        images: list = [None] * len(items)
        # One forward pass per input kind present in the batch.
        for kind in ("grids", "latents", "latents_q"):
            idx = [i for i, (k, _, _) in enumerate(items) if k == kind]
            if not idx:
                continue
            batch = torch.cat([items[i][1] for i in idx]).to(self.device)
            if kind == "grids":
                pixels = self.model.decode_indices(batch)
            else:
                pixels = self.model.decode_latents(batch, quantize=kind == "latents_q")
            arrays = tensor_to_arrays(pixels)
            for i, rows in zip(idx, item_slices(len(items[i][1]) for i in idx), strict=True):
                images[i] = arrays[rows]
        size = self.model.image_size
        return [
            tokenizer_pb2.DetokenizeResponse(pixels=[pixels_to_proto(a) for a in arrs])
            if raw
            else tokenizer_pb2.DetokenizeResponse(
                images=[common_pb2.Image(png=encode_png(a), width=size, height=size) for a in arrs]
            )
            for arrs, (_, _, raw) in zip(images, items, strict=True)
        ]
