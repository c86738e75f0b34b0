"""Edits, captions and the mixed route over in-process services (tokenizer, detokenizer,
mixed model) on a tiny random bundle: the mask keeps every token outside it, bad input is
refused before any model runs, a bundle without the model answers NotFound."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from tessera.bundle.random_init import build_random_bundle
from tessera.common.errors import InvalidArgument, NotFound
from tessera.common.images import editable_cells, mask_alpha
from tessera.mixed.deployment import MixedModel
from tessera.routes.bundle import BundleInfo
from tessera.routes.handles import ModelHandles
from tessera.routes.local import LocalHandle
from tessera.routes.pipelines import Pipelines
from tessera.routes.schemas import CaptionParams, EditParams, GenerationParams, validate
from tessera.tokenizer.deployment import Detokenizer, Tokenizer


class Recorder:
    """A service whose calls (method, request, response) are kept."""

    def __init__(self, instance):
        self.instance, self.calls = instance, []

    def __getattr__(self, name):
        method = getattr(self.instance, name)
        if name.endswith("Stream"):

            async def stream(request):
                async for event in method(request):
                    self.calls.append((name, request, event))
                    yield event

            return stream

        async def unary(request):
            response = await method(request)
            self.calls.append((name, request, response))
            return response

        return unary


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    build_random_bundle(out, "tiny", tiny=True, seed=0)
    return out


@pytest.fixture(scope="module")
def services(bundle):
    mixed = MixedModel.func_or_class(str(bundle), "cpu")
    yield {
        "tokenizer": Recorder(Tokenizer.func_or_class(str(bundle), "cpu")),
        "detokenizer": Detokenizer.func_or_class(str(bundle), "cpu"),
        "mixed": Recorder(mixed),
    }
    mixed.engine.close()


@pytest.fixture()
def pipelines(bundle, services):
    for s in (services["tokenizer"], services["mixed"]):
        s.calls.clear()
    handles = ModelHandles(**{k: LocalHandle(v) for k, v in services.items()})
    return Pipelines(handles, BundleInfo.read(bundle))


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


SIDE = 16  # the tiny tokenizer's image size (a 4x4 grid of 4px patches)
rng = np.random.default_rng(0)
SOURCE = png(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))


def mask_png() -> bytes:
    rgba = np.full((SIDE, SIDE, 4), 255, np.uint8)
    rgba[:8, 4:6, 3] = 0  # cells (0, 1) and (1, 1) may change
    rgba[13, 15, 3] = 0  # one pixel of cell (3, 3)
    return png(rgba)


def edit(**fields) -> EditParams:
    return validate(EditParams, {"prompt": "make the circle red", **fields})


async def test_a_masked_edit_keeps_every_token_outside_the_mask(pipelines, services):
    res = await pipelines.edit(SOURCE, edit(n=2, seed=3, temperature=1.5), mask_png())
    assert res.route == "edit" and res.seed == 3 and len(res.images) == 2
    assert (res.images[0].width, res.images[0].height) == (SIDE, SIDE)
    ((_, request, response),) = [c for c in services["mixed"].calls if c[0] == "EditGrids"]
    editable = list(request.editable)
    assert editable == editable_cells(mask_alpha(mask_png(), SIDE), 4)
    assert [i for i, e in enumerate(editable) if e] == [1, 5, 15]
    source = list(request.source.tokens)
    (_, _, tokenized) = services["tokenizer"].calls[0]
    assert source == list(tokenized.grids[0].tokens)
    for grid in response.grids:
        assert all(t == s for t, s, e in zip(grid.tokens, source, editable, strict=True) if not e)
    big = await pipelines.edit(SOURCE, edit(size="32x32"))
    assert (big.images[0].width, big.images[0].height) == (32, 32)


async def test_a_streamed_edit_sends_previews_then_the_result(pipelines):
    events = []

    async def on_event(event):
        events.append(event)
        return True

    streamed = await pipelines.edit(SOURCE, edit(seed=1), on_event=on_event)
    plain = await pipelines.edit(SOURCE, edit(seed=1))
    assert events and all(len(e.previews) == 1 for e in events)
    assert events[0].progress.stage == "mixed"
    assert [i.png for i in streamed.images] == [i.png for i in plain.images]


async def test_captions_come_best_first_with_scores(pipelines):
    captions = await pipelines.caption(
        SOURCE, validate(CaptionParams, {"n": 3, "temperature": 1.0, "seed": 2})
    )
    assert len(captions) == 3 and all(isinstance(c.text, str) for c in captions)
    assert [c.score for c in captions] == sorted((c.score for c in captions), reverse=True)


async def test_the_mixed_route_generates_and_refuses_options_it_lacks(pipelines):
    res = await pipelines.generate(GenerationParams(prompt="a red circle", route="mixed", n=2))
    assert res.route == "mixed" and len(res.images) == 2
    with pytest.raises(InvalidArgument, match="top_p"):
        pipelines.check_params(GenerationParams(prompt="x", route="mixed", top_p=0.5))


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (jpeg(), None, "PNG"),
        (b"\x89PNG\r\n\x1a\nbroken", None, "readable"),
        (png(np.zeros((8, 8, 3), np.uint8)), None, "8x8"),
        (SOURCE, png(np.zeros((8, 8, 4), np.uint8)), "mask is 8x8"),
        (SOURCE, png(np.zeros((SIDE, SIDE, 3), np.uint8)), "alpha"),
        (SOURCE, jpeg(), "mask must be a PNG"),
        (b"", None, "empty"),
    ],
)
async def test_bad_images_are_refused_before_any_model_runs(
    pipelines, services, image, mask, message
):
    with pytest.raises(InvalidArgument, match=message):
        await pipelines.edit(image, edit(), mask)
    if mask is None:
        with pytest.raises(InvalidArgument, match=message):
            await pipelines.caption(image, CaptionParams())
    assert not services["tokenizer"].calls and not services["mixed"].calls


async def test_a_bundle_without_the_mixed_model_answers_not_found(pipelines):
    info = dataclasses.replace(pipelines.info, edits=False, routes=("ar", "unclip", "pixel"))
    bare = Pipelines(pipelines.handles, info)
    with pytest.raises(NotFound):
        await bare.edit(SOURCE, edit())
    with pytest.raises(NotFound):
        await bare.caption(SOURCE, CaptionParams())
    with pytest.raises(NotFound):
        bare.check_params(GenerationParams(prompt="x", route="mixed"))
    with pytest.raises(NotFound):
        await pipelines.edit(SOURCE, edit(model="another"))
