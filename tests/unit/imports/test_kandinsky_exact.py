"""An imported Kandinsky 2.2 bundle, run through Tessera's routes and engines in-process
(the same route code as served, over local handles), against diffusers' own
``KandinskyV22PriorPipeline`` + ``KandinskyV22Pipeline`` on the same tiny checkpoint with the
same seeds: one generator per image on both sides."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tessera.imports.kandinsky_tiny import max_pixel_error, reference_images

PROMPT = "a red circle"
ONE_LEVEL = 1.01 / 255  # the served images are PNGs; the reference is float


@pytest.fixture(scope="module")
def pipelines(kandinsky_bundle: Path):
    from tessera.routes.local import local_pipelines

    return local_pipelines(kandinsky_bundle, "cpu")


@pytest.mark.parametrize(("n", "guidance"), [(1, 4.0), (2, 1.0)])
def test_route_matches_the_diffusers_pipelines(
    pipelines, kandinsky_src: Path, n: int, guidance: float
) -> None:
    from tessera.routes.schemas import GenerationParams

    params = GenerationParams(
        prompt=PROMPT, route="unclip", n=n, seed=11, steps=3, guidance_scale=guidance
    )
    result = asyncio.run(pipelines.generate(params))
    assert pipelines.info.routes == ("unclip",) and pipelines.info.image_size == 64
    ref = reference_images(kandinsky_src, PROMPT, n=n, seed=11, steps=3, guidance=guidance)
    assert len(result.images) == n
    for image, expected in zip(result.images, ref, strict=True):
        assert max_pixel_error(image.png, expected) <= ONE_LEVEL


def test_streamed_route_previews_then_the_same_image(pipelines, kandinsky_src: Path) -> None:
    from tessera.routes.schemas import GenerationParams

    params = GenerationParams(prompt=PROMPT, route="unclip", seed=5, steps=4, guidance_scale=4.0)

    async def collect() -> list:
        return [event async for event in pipelines.stream(params)]

    events = asyncio.run(collect())
    previews = [e for e in events if e.previews]
    assert previews and all(p.previews[0].width == 64 for p in previews)
    ref = reference_images(kandinsky_src, PROMPT, n=1, seed=5, steps=4, guidance=4.0)
    assert max_pixel_error(events[-1].result.images[0].png, ref[0]) <= ONE_LEVEL


def test_another_image_size_from_the_import(kandinsky_src: Path, tmp_path: Path) -> None:
    """Sizes come from the bundle: imported at 128 px, the latents are 64x64 and the images
    still match the pipelines asked for 128x128."""
    from tessera.imports import import_directory
    from tessera.routes.local import local_pipelines
    from tessera.routes.schemas import GenerationParams

    bundle = import_directory(kandinsky_src, tmp_path / "k128", image_size=128)
    pipes = local_pipelines(bundle, "cpu")
    assert pipes.info.image_size == 128
    params = GenerationParams(prompt=PROMPT, route="unclip", seed=2, steps=2, guidance_scale=4.0)
    image = asyncio.run(pipes.generate(params)).images[0]
    assert (image.width, image.height) == (128, 128)
    ref = reference_images(kandinsky_src, PROMPT, n=1, seed=2, steps=2, guidance=4.0, side=128)
    assert max_pixel_error(image.png, ref[0]) <= ONE_LEVEL
