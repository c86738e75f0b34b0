import io

import numpy as np
import pytest
from PIL import Image

from tessera.common.errors import InvalidArgument
from tessera.common.images import (
    MAX_IMAGE_BYTES,
    arrays_to_tensor,
    decode_image,
    encode_png,
    labelled,
    make_grid,
    pixels_from_proto,
    pixels_to_image,
    pixels_to_proto,
    tensor_to_arrays,
)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    arr = decode_image(png_bytes(img), 8)
    assert (arr == 255).all()


def test_resize_policy_and_limits():
    data = png_bytes(Image.new("RGB", (16, 16), (1, 2, 3)))
    assert decode_image(data, 8, resize=True).shape == (8, 8, 3)
    with pytest.raises(InvalidArgument, match="takes 8x8"):
        decode_image(data, 8, resize=False)
    with pytest.raises(InvalidArgument, match="not a readable image"):
        decode_image(b"\x89PNG garbage", 8)
    with pytest.raises(InvalidArgument, match="empty"):
        decode_image(b"", 8)
    with pytest.raises(InvalidArgument, match="bytes"):
        decode_image(b"0" * (MAX_IMAGE_BYTES + 1), 8)
    with pytest.raises(InvalidArgument, match="largest side"):
        decode_image(png_bytes(Image.new("RGB", (2048, 8))), 8)


def test_png_and_tensor_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    assert (tensor_to_arrays(arrays_to_tensor(arr)) == arr).all()
    back = decode_image(encode_png(arr[0]), 8, resize=False)
    assert (back == arr[0]).all()
    assert decode_image(encode_png(arr[0], scale=2), 16, resize=False).shape == (16, 16, 3)
    assert make_grid(list(arr), columns=2, pad=1).shape == (2 * 9 + 1, 2 * 9 + 1, 3)


def test_pixels_round_trip_and_encode_once_with_the_upscale():
    arr = np.random.default_rng(1).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    msg = pixels_to_proto(arr)
    assert (msg.width, msg.height, len(msg.rgb)) == (6, 8, 8 * 6 * 3)
    assert (pixels_from_proto(msg) == arr).all()
    assert pixels_from_proto(msg, 4).shape == (4, 4, 3)
    image = pixels_to_image(msg, scale=2)
    assert (image.width, image.height) == (12, 16)
    big = np.asarray(Image.open(io.BytesIO(image.png)).convert("RGB"))
    assert (big[::2, ::2] == arr).all() and (big[1::2, 1::2] == arr).all()
    assert pixels_to_image(msg).png == encode_png(arr)


def test_malformed_pixels_are_invalid_arguments():
    msg = pixels_to_proto(np.zeros((4, 4, 3), np.uint8))
    msg.rgb = msg.rgb[:-3]
    with pytest.raises(InvalidArgument, match="bytes"):
        pixels_from_proto(msg)
    for w, h in ((0, 4), (4, 2048)):
        with pytest.raises(InvalidArgument, match="each side"):
            pixels_from_proto(type(msg)(rgb=b"", width=w, height=h))


def test_labelled_grid_rules_off_each_row_and_writes_the_labels(tmp_path):
    """Grids of white-background images: a grey rule between rows ties each label to its row;
    the label (wrapped) is drawn in the left margin."""
    tiles = [np.full((8, 8, 3), 255, np.uint8) for _ in range(6)]
    path = labelled(make_grid(tiles, columns=2), ["first row", "second row " * 6, "third"],
                    tmp_path / "grid.png")  # fmt: skip
    img = np.asarray(Image.open(path))
    row_h = img.shape[0] / 3
    for boundary in (row_h, 2 * row_h):
        assert (img[int(boundary), :, 0] == 210).all()  # the rule spans margin and images
    assert (img[: int(row_h) - 1, :190] < 128).any()  # text in the first row's margin
    assert not (img[: int(row_h) - 1, 190:] < 250).any()  # the tiles themselves stay white
