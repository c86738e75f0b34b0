"""``ServedModels``: the routes of every bundle one application serves, chosen by a
request's ``model`` (none: the default bundle).

The default bundle's model services are the registry's deployments (``Prior``, ``Decoder``,
…); each extra bundle (the Serve config's ``args.extra_bundles``, e.g. an imported Kandinsky
2.2) has its own copies of the services it needs, named ``<Service>-<bundle>``, whose handles
reach the gateway and the job worker as ``peers`` ({bundle name: {"bundle_dir", service
handles…}}). Each bundle gets its own ``Pipelines``; everything bundle-specific (size, route,
steps checks, the latents' quantizing) stays in that bundle's ``BundleInfo``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessera.common.errors import NotFound
from tessera.routes.bundle import BundleInfo
from tessera.routes.handles import ModelHandles
from tessera.routes.pipelines import EventCallback, Pipelines
from tessera.routes.schemas import (
    Caption,
    CaptionParams,
    EditParams,
    GenerationParams,
    VariationParams,
)
from tessera.v1 import generation_pb2


def bundle_slug(name: str) -> str:
    """A bundle name as a deployment-name suffix (letters, digits, '-')."""
    return "".join(c if c.isalnum() else "-" for c in name).strip("-") or "bundle"


class ServedModels:
    """The same calls as ``Pipelines`` (generate, stream, variations, edit, caption,
    check_params), each
    sent to the ``Pipelines`` of the bundle its request names."""

    def __init__(
        self,
        default: Pipelines,
        peers: dict[str, dict[str, Any]] | None = None,
        ar_candidates: int | None = None,
    ) -> None:
        self.default = default
        self.by_name: dict[str, Pipelines] = {default.info.name: default}
        for name, spec in (peers or {}).items():
            spec = dict(spec)
            info = BundleInfo.read(Path(spec.pop("bundle_dir")))
            self.by_name[name] = Pipelines(ModelHandles(**spec), info, ar_candidates)

    @property
    def peers(self) -> dict[str, Pipelines]:
        """The extra bundles' routes by bundle name."""
        return {n: p for n, p in self.by_name.items() if p is not self.default}

    @property
    def infos(self) -> list[BundleInfo]:
        """Every served bundle, the default first."""
        return [p.info for p in self.by_name.values()]

    def for_model(self, model: str | None) -> Pipelines:
        if not model:
            return self.default
        try:
            return self.by_name[model]
        except KeyError:
            served = ", ".join(repr(n) for n in self.by_name)
            raise NotFound(f"unknown model {model!r}; served: {served}") from None

    def check_params(self, params: GenerationParams) -> None:
        self.for_model(params.model).check_params(params)

    async def generate(
        self, params: GenerationParams, on_event: EventCallback | None = None
    ) -> generation_pb2.GenerateResponse:
        return await self.for_model(params.model).generate(params, on_event)

    def stream(self, params: GenerationParams) -> Any:
        return self.for_model(params.model).stream(params)

    async def variations(
        self, image: bytes, params: VariationParams, on_event: EventCallback | None = None
    ) -> generation_pb2.GenerateResponse:
        return await self.for_model(params.model).variations(image, params, on_event)

    async def edit(
        self,
        image: bytes,
        params: EditParams,
        mask: bytes | None = None,
        on_event: EventCallback | None = None,
    ) -> generation_pb2.GenerateResponse:
        return await self.for_model(params.model).edit(image, params, mask, on_event)

    async def caption(self, image: bytes, params: CaptionParams) -> list[Caption]:
        return await self.for_model(params.model).caption(image, params)
