"""The mixed-modal model's routes: instruction edits, captions and text -> image (``mixed``).

``edit``:    Tokenizer.Tokenize(source PNG) -> MixedModel.EditGrids(grid, instruction,
             editable cells from the mask) -> Detokenizer.Detokenize(grids)
``caption``: Tokenizer.Tokenize(PNG) -> MixedModel.CaptionGrids(grid) -> captions, scores
``mixed``:   MixedModel.GenerateGrids(prompt) -> Detokenizer.Detokenize(grids)

Everything a request can get wrong (model, size, a non-PNG, an image or mask of another
size, a mask without alpha) is checked before any model runs. Streamed, previews decode the
partial grids: an edit's cells not drawn yet show the source's, a generation's token 0.
``Pipelines`` takes these as a mixin (``routes/pipelines.py`` holds the other routes).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from tessera.common.errors import Cancelled, InvalidArgument, NotFound
from tessera.common.images import editable_cells, mask_alpha, pixels_to_image, read_png
from tessera.common.serving import call
from tessera.routes.schemas import (
    Caption,
    CaptionParams,
    EditParams,
    EventCallback,
    GenerationParams,
    StreamEvent,
)
from tessera.v1 import common_pb2, generation_pb2, mixed_pb2, tokenizer_pb2

if TYPE_CHECKING:
    from tessera.routes.bundle import BundleInfo
    from tessera.routes.handles import ModelHandles

# The options each request passes to the mixed model as they are, when set.
EDIT_OPTIONS = ("seed", "temperature", "top_k", "guidance_scale", "image_guidance_scale")
T2I_OPTIONS = ("seed", "temperature", "top_k", "guidance_scale")
NOT_MIXED_OPTIONS = ("top_p", "candidates", "steps")  # generation options the route lacks


class MixedRoutes:
    """Edits, captions and the ``mixed`` route, for ``Pipelines`` (handles, info, _decode)."""

    handles: ModelHandles
    info: BundleInfo

    def check_mixed(self) -> None:
        """NotFound when the served bundle has no mixed-modal model."""
        if not self.info.edits:
            raise NotFound(
                f"model {self.info.name!r} has no mixed-modal component: edits, captions and "
                "the mixed route are not available"
            )

    def check_mixed_params(self, params: GenerationParams) -> None:
        """The generation options the mixed route does not take are a 400, not ignored."""
        for name in NOT_MIXED_OPTIONS:
            if getattr(params, name) is not None:
                raise InvalidArgument(f"{name} is not an option of the mixed route")

    def check_edit(self, image: bytes, params: EditParams, mask: bytes | None) -> int:
        """Every check of an edit request (no model runs): its output upscale factor."""
        self.check_model(params.model)  # type: ignore[attr-defined]
        self.check_mixed()
        scale = self.scale_for(params.size)  # type: ignore[attr-defined]
        read_png(image, self.info.image_size)
        if mask is not None:
            mask_alpha(mask, self.info.image_size)
        return scale

    async def edit(
        self,
        image: bytes,
        params: EditParams,
        mask: bytes | None = None,
        on_event: EventCallback | None = None,
    ) -> generation_pb2.GenerateResponse:
        """Edit ``image`` (a PNG of the bundle's native size) by ``params.prompt``; ``mask``
        (a PNG of the same size, alpha 0 where the image may change) keeps every other token
        cell exactly the source's. ``on_event`` gets progress with previews."""
        scale = self.check_edit(image, params, mask)
        alpha = mask_alpha(mask, self.info.image_size) if mask is not None else None
        start = time.perf_counter()
        source = await self._tokenize(image)
        req = mixed_pb2.EditGridsRequest(source=source, instruction=params.prompt, n=params.n)
        if alpha is not None:
            req.editable.extend(editable_cells(alpha, source.height))
        _set(req, params, EDIT_OPTIONS)
        grids, seed = await self._grids(req, on_event, fill=source)
        images = await self._decode(grids=grids)  # type: ignore[attr-defined]
        return generation_pb2.GenerateResponse(
            images=[pixels_to_image(p, scale) for p in images],
            seed=seed,
            route="edit",
            model=self.info.name,
            elapsed_ms=(time.perf_counter() - start) * 1000,
        )

    async def caption(self, image: bytes, params: CaptionParams) -> list[Caption]:
        """``params.n`` captions of ``image``, best first, each with its score (the sum of
        its tokens' log-probabilities)."""
        self.check_model(params.model)  # type: ignore[attr-defined]
        self.check_mixed()
        read_png(image, self.info.image_size)
        req = mixed_pb2.CaptionGridsRequest(grid=await self._tokenize(image), n=params.n)
        _set(req, params, ("temperature", "seed"))
        res = await call(self.handles.require("mixed").CaptionGrids, req)
        return [Caption(c.text, c.score) for c in res.captions]

    async def _mixed(
        self, params: GenerationParams, on_event: EventCallback | None = None
    ) -> tuple[list, int]:
        """Text -> image through the mixed model: (pixels, seed)."""
        self.check_mixed()
        self.check_mixed_params(params)
        req = mixed_pb2.GenerateGridsRequest(prompt=params.prompt, n=params.n)
        _set(req, params, T2I_OPTIONS)
        grids, seed = await self._grids(req, on_event)
        return await self._decode(grids=grids), seed  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------
    async def _tokenize(self, image: bytes) -> common_pb2.TokenGrid:
        res = await call(
            self.handles.require("tokenizer").Tokenize,
            tokenizer_pb2.TokenizeRequest(images=[image], resize=False),
        )
        if not res.grids:
            raise NotFound(f"model {self.info.name!r} has a continuous tokenizer: no token grids")
        return res.grids[0]

    async def _grids(
        self,
        req: mixed_pb2.EditGridsRequest | mixed_pb2.GenerateGridsRequest,
        on_event: EventCallback | None,
        fill: common_pb2.TokenGrid | None = None,
    ) -> tuple[list, int]:
        """The mixed model's grids for ``req`` (an edit or a generation); with ``on_event``
        streamed, each event's previews the partial grids decoded (``fill``'s codes, else
        0, where not drawn yet)."""
        mixed = self.handles.require("mixed")
        edit = isinstance(req, mixed_pb2.EditGridsRequest)
        if on_event is None:
            res = await call(mixed.EditGrids if edit else mixed.GenerateGrids, req)
            return list(res.grids), res.seed
        if edit:
            sreq: Any = mixed_pb2.EditGridsStreamRequest(request=req)
            stream = mixed.options(stream=True).EditGridsStream.remote(sreq)
        else:
            sreq = mixed_pb2.GenerateGridsStreamRequest(request=req)
            stream = mixed.options(stream=True).GenerateGridsStream.remote(sreq)
        grids, seed = [], 0
        async for ev in stream:
            grids, seed = list(ev.grids), ev.seed
            if ev.done:
                break
            shown = [_filled(g, fill) for g in grids]
            pixels = await self._decode(grids=shown)  # type: ignore[attr-defined]
            previews = [pixels_to_image(p) for p in pixels]
            if not await on_event(StreamEvent(progress=ev.progress, previews=previews)):
                cancel = getattr(stream, "cancel", None)
                if cancel:
                    cancel()
                raise Cancelled("generation cancelled")
        return grids, seed


def _set(msg: Any, params: Any, names: tuple[str, ...]) -> None:
    """Copy the options ``names`` that ``params`` sets onto ``msg``."""
    for name in names:
        value = getattr(params, name)
        if value is not None:
            setattr(msg, name, value)


def _filled(grid: common_pb2.TokenGrid, fill: common_pb2.TokenGrid | None) -> common_pb2.TokenGrid:
    """A partial grid with its undrawn cells (-1) taken from ``fill``, else token 0."""
    base = list(fill.tokens) if fill is not None else [0] * len(grid.tokens)
    tokens = [t if t >= 0 else b for t, b in zip(grid.tokens, base, strict=True)]
    return common_pb2.TokenGrid(tokens=tokens, height=grid.height, width=grid.width)
