"""An imported Kandinsky 2.2 bundle, run through Tessera's routes and engines in-process
(the same route code as served, over local handles), against diffusers' own
``KandinskyV22PriorPipeline`` + ``KandinskyV22Pipeline`` on the same tiny checkpoint with the
same seeds: one generator per image on both sides."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

PROMPT = "a red circle"
PRIOR_STEPS = 25  # the route runs the prior at the bundle's default (the pipeline's)


def reference_images(
    src: Path, n: int, seed: int, steps: int, guidance: float, side: int = 64
) -> np.ndarray:
    """diffusers' pipelines: (n, side, side, 3) floats in [0, 1]."""
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

    prior = KandinskyV22PriorPipeline.from_pretrained(str(src / "prior"), local_files_only=True)
    decoder = KandinskyV22Pipeline.from_pretrained(str(src / "decoder"), local_files_only=True)
    for pipe in (prior, decoder):
        pipe.set_progress_bar_config(disable=True)

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(seed + i) for i in range(n)]

    out = prior(
        [PROMPT] * n,
        num_inference_steps=PRIOR_STEPS,
        guidance_scale=4.0,
        generator=gens(),
        output_type="pt",
    )
    return decoder(
        image_embeds=out.image_embeds,
        negative_image_embeds=out.negative_image_embeds,
        height=side,
        width=side,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=gens(),
        output_type="np",
    ).images


def png_floats(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float32) / 255


def assert_same_images(pngs: list[bytes], reference: np.ndarray) -> None:
    """Within one 8-bit level (the served images are PNGs; the reference is float)."""
    assert len(pngs) == len(reference)
    for png, ref in zip(pngs, reference, strict=True):
        assert np.abs(png_floats(png) - ref).max() <= 1.01 / 255


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
    assert_same_images(
        [im.png for im in result.images], reference_images(kandinsky_src, n, 11, 3, guidance)
    )


def test_streamed_route_previews_then_the_same_image(pipelines, kandinsky_src: Path) -> None:
    from tessera.routes.schemas import GenerationParams

    params = GenerationParams(prompt=PROMPT, route="unclip", seed=5, steps=4, guidance_scale=4.0)

    async def collect() -> list:
        return [event async for event in pipelines.stream(params)]

    events = asyncio.run(collect())
    previews = [e for e in events if e.previews]
    assert previews and all(p.previews[0].width == 64 for p in previews)
    final = events[-1].result
    assert_same_images([final.images[0].png], reference_images(kandinsky_src, 1, 5, 4, 4.0))
