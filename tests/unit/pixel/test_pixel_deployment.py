"""The PixelModel deployment class in-process: ``return_pixels`` answers the same images as
raw RGB (what the ``pixel`` route asks for, so Pipelines encodes once), unary and streamed."""

from __future__ import annotations

import pytest

from tessera.bundle.random_init import build_random_bundle
from tessera.common.images import decode_image, pixels_from_proto
from tessera.pixel.deployment import PixelModel
from tessera.v1 import pixel_pb2


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    bundle = tmp_path_factory.mktemp("bundle")
    build_random_bundle(bundle, "tiny", tiny=True, seed=0)
    replica = PixelModel.func_or_class(str(bundle), "cpu")
    yield replica
    replica.engine.close()


async def test_return_pixels_answers_the_pngs_pixels_raw(replica):
    side = replica.image_size
    req = pixel_pb2.SamplePixelsRequest(prompt="a red circle", n=2, seed=5)
    pngs = await replica.SamplePixels(req)
    req.return_pixels = True
    raw = await replica.SamplePixels(req)
    assert not raw.images and len(raw.pixels) == 2 and not pngs.pixels
    assert raw.seed == pngs.seed == 5
    for png, pixels in zip(pngs.images, raw.pixels, strict=True):
        assert (pixels.width, pixels.height) == (side, side)
        assert (pixels_from_proto(pixels) == decode_image(png.png, side, resize=False)).all()


async def test_the_stream_previews_pngs_and_ends_with_raw_pixels(replica):
    req = pixel_pb2.SamplePixelsRequest(prompt="a star", seed=3, return_pixels=True)
    stream = pixel_pb2.SamplePixelsStreamRequest(request=req, stream_every=1)
    events = [e async for e in replica.SamplePixelsStream(stream)]
    assert events[-1].done and not events[-1].images and len(events[-1].pixels) == 1
    assert all(len(e.images) == 1 and not e.pixels for e in events[:-1])
    unary = await replica.SamplePixels(req)
    assert pixels_from_proto(unary.pixels[0]).tobytes() == events[-1].pixels[0].rgb
