"""The mixed-modal model's routes: instruction edits, captions and text -> image (``mixed``).

``edit``:    Tokenizer.Tokenize(source PNG) -> MixedModel.Edit(grid, instruction, editable
             cells) -> Detokenizer.Detokenize(grids)
``caption``: Tokenizer.Tokenize(PNG) -> MixedModel.Caption(grid) -> captions with scores
``mixed``:   MixedModel.Generate(prompt) -> Detokenizer.Detokenize(grids)

``Pipelines`` takes these as a mixin (``routes/pipelines.py`` is the other routes').
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tessera.common.errors import NotFound
from tessera.routes.schemas import (
    Caption,
    CaptionParams,
    EditParams,
    EventCallback,
    GenerationParams,
)
from tessera.v1 import generation_pb2

if TYPE_CHECKING:
    from tessera.routes.bundle import BundleInfo
    from tessera.routes.handles import ModelHandles


class MixedRoutes:
    """Edits, captions and the ``mixed`` route, for ``Pipelines`` (handles, info)."""

    handles: ModelHandles
    info: BundleInfo

    def check_mixed(self) -> None:
        """NotFound when the served bundle has no mixed-modal model."""
        if not self.info.edits:
            raise NotFound(
                f"model {self.info.name!r} has no mixed-modal component: edits, captions and "
                "the mixed route are not available"
            )

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
        self.check_mixed()
        raise NotFound("edits are not served yet")

    async def caption(self, image: bytes, params: CaptionParams) -> list[Caption]:
        """``params.n`` captions of ``image``, best first, each with its score."""
        self.check_mixed()
        raise NotFound("captions are not served yet")

    async def _mixed(
        self, params: GenerationParams, on_event: EventCallback | None = None
    ) -> tuple[list, int]:
        """Text -> image through the mixed model: (pixels, seed)."""
        self.check_mixed()
        raise NotFound("the mixed route is not served yet")
