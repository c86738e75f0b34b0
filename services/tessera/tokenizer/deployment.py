"""Tokenizer and Detokenizer deployments: the two halves of the bundle's tokenizer model.

The bundle's tokenizer may be any kind (``tokenizer/model.py``): the discrete ones (vq,
gumbel) answer with token grids and take grids or latents; a continuous ``kl`` tokenizer
answers with its latents only (no grids, ``codebook_size`` 0) and takes latents only.

Each request may carry up to MAX_ITEMS_PER_CALL images or grids; ``@serve.batch`` merges concurrent
requests into one forward pass. A bad item fails only its own request.

The Detokenizer also reranks the ar route's candidates (``DetokenizeRequest.rerank``): it holds
the bundle's CLIP when the route reranks, scores the pixels it has just decoded and answers
only the best of each group, so the candidates never travel to another deployment
(``docs/decisions/rerank-in-the-detokenizer.md``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from ray import serve

from tessera.common import metrics
from tessera.common.checkpoint import reranks_ar
from tessera.common.errors import InvalidArgument
from tessera.common.images import (
    arrays_to_tensor,
    decode_image,
    encode_png,
    pixels_to_proto,
    resize_array,
    tensor_to_arrays,
)
from tessera.common.limits import MAX_CANDIDATES, MAX_ITEMS_PER_CALL
from tessera.common.protos import (
    check_count,
    grid_from_proto,
    grid_to_proto,
    tensor_from_proto,
    tensor_to_proto,
    text_states_from_proto,
)
from tessera.common.serving import BatchKnobs, batched, item_slices, load_model, split_results
from tessera.v1 import common_pb2, tokenizer_pb2


def tokenize_cost(item: tuple[list, bool]) -> int:
    """A Tokenize request's batch cost: its pixels."""
    return sum(a.shape[0] * a.shape[1] for a in item[0])


class DecodeItem(NamedTuple):
    """One Detokenize request inside a batch."""

    kind: str  # grids | latents | latents_q (latents snapped to the codebook)
    batch: torch.Tensor  # (N, h, w) token ids or (N, C, h, w) latents
    raw: bool  # answer Pixels, not PNGs
    # (pooled MiniLM text (384,), candidates per group): keep the best of each group
    rerank: tuple[torch.Tensor, int] | None = None


def detokenize_cost(item: DecodeItem) -> int:
    """A Detokenize request's batch cost: its latent cells (pixels / downsampling²)."""
    batch = item.batch
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
    ``return_pixels`` (the routes ask for those and PNG-encode only what they return); with
    ``rerank``, only the candidate of each group that CLIP puts closest to the text."""

    _batched_methods = {"_decode_batch": "max_batch_cost"}

    def __init__(self, bundle_dir: str | Path, device: str | None = None) -> None:
        super().__init__(bundle_dir, device)
        # The ar route's reranking runs here, on the pixels just decoded: the bundle's CLIP
        # (a couple of MB) is loaded a second time, beside the Prior's copy.
        self.clip = load_model(bundle_dir, "clip", device)[0] if reranks_ar(bundle_dir) else None

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

    def _parse_rerank(
        self, request: tokenizer_pb2.DetokenizeRequest, items: int
    ) -> tuple[torch.Tensor, int] | None:
        if not request.HasField("rerank"):
            return None
        if self.clip is None:
            raise InvalidArgument(
                "rerank needs a bundle whose LM and CLIP are Tessera's own; this one has none"
            )
        k = request.rerank.candidates
        check_count("rerank.candidates", k, 1, MAX_CANDIDATES)
        if items % k:
            raise InvalidArgument(
                f"{items} items do not split into groups of rerank.candidates={k}"
            )
        text = text_states_from_proto(request.rerank.text_states)
        return text.pooled[0], k

    async def Detokenize(
        self, request: tokenizer_pb2.DetokenizeRequest
    ) -> tokenizer_pb2.DetokenizeResponse:
        kind, batch = self._parse(request)
        rerank = self._parse_rerank(request, len(batch))
        item = DecodeItem(kind, batch, request.return_pixels, rerank)
        return split_results(await self._decode_batch(item))

    @batched(max_batch_size=16 * 64, cost=detokenize_cost)
    async def _decode_batch(self, items: list[DecodeItem]) -> list:
        return await asyncio.to_thread(self._decode_many, items)

    @torch.inference_mode()
    def _decode_many(self, items: list[DecodeItem]) -> list:
        metrics.observe_batch("Detokenizer", sum(len(item.batch) for item in items))
        images: list = [None] * len(items)
        # One forward pass per input kind present in the batch.
        for kind in ("grids", "latents", "latents_q"):
            idx = [i for i, item in enumerate(items) if item.kind == kind]
            if not idx:
                continue
            batch = torch.cat([items[i].batch for i in idx]).to(self.device)
            if kind == "grids":
                pixels = self.model.decode_indices(batch)
            else:
                pixels = self.model.decode_latents(batch, quantize=kind == "latents_q")
            arrays = tensor_to_arrays(pixels)
            for i, rows in zip(idx, item_slices(len(items[i].batch) for i in idx), strict=True):
                images[i] = arrays[rows]
        ranked = [i for i, item in enumerate(items) if item.rerank is not None]
        picks = self._rerank([items[i] for i in ranked], [images[i] for i in ranked])
        choices = dict(zip(ranked, picks, strict=True))
        responses = []
        for i, (arrs, item) in enumerate(zip(images, items, strict=True)):
            chosen, scores = choices.get(i, ([], []))
            if item.rerank is not None:
                arrs = arrs[np.arange(len(chosen)) * item.rerank[1] + np.asarray(chosen)]
            res = tokenizer_pb2.DetokenizeResponse(chosen=chosen, scores=scores)
            if item.raw:
                res.pixels.extend(pixels_to_proto(a) for a in arrs)
            else:
                size = self.model.image_size
                res.images.extend(
                    common_pb2.Image(png=encode_png(a), width=size, height=size) for a in arrs
                )
            responses.append(res)
        return responses

    def _rerank(
        self, items: list[DecodeItem], images: list[np.ndarray]
    ) -> list[tuple[list[int], list[float]]]:
        """Per item: the index of each group's best candidate and its cosine to the text.
        One CLIP forward for every reranked item's images; embeddings are L2-normalised, so
        a dot product is the cosine."""
        if not items:
            return []
        size = self.clip.image_size
        arrays = [resize_array(a, size) for arrs in images for a in arrs]
        emb = self.clip.embed_image(arrays_to_tensor(arrays).to(self.device)).float().cpu()
        texts = self.clip.embed_text(
            torch.stack([item.rerank[0] for item in items]).to(self.device)
        )
        texts = texts.float().cpu()
        out = []
        for t, item, rows in zip(texts, items, item_slices(len(a) for a in images), strict=True):
            k = item.rerank[1]
            scores = (emb[rows] @ t).view(-1, k)  # (groups, k): group-major, as sent
            best = scores.argmax(dim=1)
            out.append((best.tolist(), scores.gather(1, best[:, None]).squeeze(1).tolist()))
        return out
