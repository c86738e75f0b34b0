import numpy as np
import pytest
from PIL import Image, ImageFilter

from tessera.data import load_dataset, shapes
from tessera.data.shapes import (
    HELDOUT_PAIRS,
    ShapeAttrs,
    all_attrs,
    caption_for,
    check_image,
    make_dataset,
    parse_caption,
    render,
)


@pytest.fixture(scope="module")
def small():
    return make_dataset(seed=0, per_combo=2)


def test_checker_reads_back_rendered_images(small):
    ds, _ = small
    truth = [parse_caption(c[0]) for c in ds.captions]
    read = [check_image(img) for img in ds.images]
    accuracy = np.mean([r == t for r, t in zip(read, truth, strict=True)])
    assert accuracy >= 0.99


def test_checker_tolerates_slight_blur(small):
    ds, _ = small
    rows = range(0, len(ds), 9)
    ok = [
        check_image(np.asarray(Image.fromarray(ds.images[i]).filter(ImageFilter.GaussianBlur(0.7))))
        == parse_caption(ds.captions[i][0])
        for i in rows
    ]
    assert np.mean(ok) >= 0.95


def test_checker_rejects_noise_blank_and_two_shapes(small):
    ds, _ = small
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert check_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) is None
    assert check_image(np.full((64, 64, 3), 255, np.uint8)) is None
    assert check_image(np.zeros((64, 64, 3), np.uint8)) is None
    two = np.minimum(render(ShapeAttrs("red", "circle", "top left", "large")),
                     render(ShapeAttrs("blue", "square", "bottom right", "large")))  # fmt: skip
    assert check_image(two) is None
    assert check_image(np.zeros((32, 32, 3), np.uint8)) is None


def test_captions_round_trip_for_every_combination():
    for attrs in all_attrs():
        assert parse_caption(caption_for(attrs)) == attrs
        for text in shapes.captions_for(attrs):
            assert parse_caption(text) == attrs
    assert parse_caption("a big violet plus in the centre") == ShapeAttrs(
        "purple", "cross", "center", "large"
    )
    assert parse_caption("a red blue circle on the left") is None
    assert parse_caption("hello") is None


def test_rendering_is_deterministic_by_seed():
    a = ShapeAttrs("green", "triangle", "center", "small")
    assert np.array_equal(render(a, seed=3), render(a, seed=3))
    assert not np.array_equal(render(a, seed=3), render(a, seed=4))
    ds1, _ = make_dataset(seed=1, per_combo=1)
    ds2, _ = make_dataset(seed=1, per_combo=1)
    assert np.array_equal(ds1.images, ds2.images)


def test_heldout_pairs_split(small, tmp_path):
    ds, heldout = small
    assert len(ds) == 432 * 2
    pairs = {(ds.label_of("color", i), ds.label_of("shape", i)) for i in np.flatnonzero(heldout)}
    assert pairs == set(HELDOUT_PAIRS)
    shapes.prepare(tmp_path, per_combo=1)
    train = load_dataset("shapes", "train", tmp_path)
    held = load_dataset("shapes", "heldout", tmp_path)
    assert len(train) + len(held) == 432
    train_pairs = {
        (train.label_of("color", i), train.label_of("shape", i)) for i in range(len(train))
    }
    assert not train_pairs & set(HELDOUT_PAIRS)
    assert (tmp_path / "shapes" / "montage.png").is_file()
