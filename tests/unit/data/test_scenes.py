import numpy as np
import pytest
from PIL import Image, ImageFilter

from tessera.data.scenes import check_scene, components, make_scene, render_scene, render_scenes
from tessera.data.shapes import ShapeAttrs, all_attrs

RED_CIRCLE = ShapeAttrs("red", "circle", "top left", "large")
BLUE_SQUARE = ShapeAttrs("blue", "square", "top", "large")  # the next cell: can touch


def test_single_shapes_read_back_as_one_shape_scenes():
    for k, attrs in enumerate(all_attrs()[::7]):
        assert check_scene(render_scene(make_scene([attrs]), seed=k)) == (attrs,)


def test_two_shape_scenes_read_back_even_in_touching_cells():
    rng = np.random.default_rng(1)
    attrs = all_attrs()
    tried = 0
    for k in range(120):
        a, b = (attrs[i] for i in rng.choice(len(attrs), 2, replace=False))
        if a.position == b.position:
            continue
        scene = make_scene([a, b])
        assert check_scene(render_scene(scene, seed=k)) == scene
        tried += 1
    assert tried > 90
    neighbours = make_scene([RED_CIRCLE, BLUE_SQUARE])
    for seed in range(20):
        assert check_scene(render_scene(neighbours, seed=seed)) == neighbours


def test_a_shape_left_alone_renders_identically_in_both_scenes():
    before = make_scene([RED_CIRCLE, ShapeAttrs("green", "cross", "bottom right", "small")])
    after = make_scene([RED_CIRCLE, ShapeAttrs("purple", "cross", "bottom right", "small")])
    a, b = render_scenes([before, after], seed=5)
    assert (a[:32, :32] == b[:32, :32]).all()  # the circle's quarter: untouched pixel for pixel
    assert not (a[32:, 32:] == b[32:, 32:]).all()


def test_scene_order_and_cells():
    assert make_scene([BLUE_SQUARE, RED_CIRCLE]) == (RED_CIRCLE, BLUE_SQUARE)
    with pytest.raises(ValueError, match="one cell"):
        make_scene([RED_CIRCLE, ShapeAttrs("blue", "square", "top left", "small")])
    with pytest.raises(ValueError, match="1 to 2"):
        make_scene([])


def test_checker_refuses_what_is_not_a_scene():
    blank = np.full((64, 64, 3), 255, np.uint8)
    assert check_scene(blank) is None
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert check_scene(noise) is None
    assert check_scene(np.zeros((32, 32, 3), np.uint8)) is None
    three = render_scene(make_scene([RED_CIRCLE]))
    three = np.minimum(
        three,
        render_scene(make_scene([ShapeAttrs("blue", "square", "center", "small")])),
    )
    three = np.minimum(
        three, render_scene(make_scene([ShapeAttrs("green", "cross", "bottom right", "small")]))
    )
    assert check_scene(three) is None  # three shapes: more than a scene holds
    speckled = render_scene(make_scene([RED_CIRCLE]))
    speckled[40:44, 50:54] = (90, 90, 90)  # a stray grey blob: not a palette shape
    assert check_scene(speckled) is None


def test_checker_tolerates_slight_blur():
    scene = make_scene([RED_CIRCLE, ShapeAttrs("yellow", "triangle", "bottom", "small")])
    blurred = Image.fromarray(render_scene(scene, seed=3)).filter(ImageFilter.GaussianBlur(0.7))
    assert check_scene(np.asarray(blurred)) == scene


def test_components_are_eight_connected():
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[4:6, 4:6] = True
    parts = components(mask)
    assert [int(p.sum()) for p in parts] == [4, 2]
