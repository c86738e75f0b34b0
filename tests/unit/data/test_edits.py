import numpy as np
import pytest

from tessera.data.edits import EDIT_KINDS, HELDOUT_EDITS, Edit, refer, sample_edit
from tessera.data.scenes import check_scene, make_scene, render_scenes
from tessera.data.shapes import COLORS, SHAPES, ShapeAttrs


def _edits(kind, n=60, seed=0):
    rng = np.random.default_rng(seed)
    return [sample_edit(rng, kind) for _ in range(n)]


def _changed(edit: Edit) -> tuple[set, set]:
    return set(edit.source) - set(edit.target), set(edit.target) - set(edit.source)


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_every_kind_changes_exactly_what_it_says(kind):
    for e in _edits(kind):
        gone, new = _changed(e)
        assert e.kind == kind and e.source != e.target
        if kind == "remove":
            assert len(gone) == 1 and not new and len(e.target) == 1
            assert e.attribute == next(iter(gone)).color
        elif kind == "add":
            assert not gone and len(new) == 1 and len(e.source) == 1
            added = next(iter(new))
            assert f"{added.size} {added.color} {added.shape}" in e.instruction
        else:
            (old,), (now,) = gone, new
            differs = {f for f in ("color", "shape", "position", "size")
                       if getattr(old, f) != getattr(now, f)}  # fmt: skip
            expected = {"recolor": "color", "reshape": "shape", "move": "position",
                        "resize": "size"}[kind]  # fmt: skip
            assert differs == {expected}
            if kind == "recolor":
                assert e.attribute == now.color and now.color in e.instruction
            if kind == "reshape":
                assert e.attribute == now.shape and e.instruction.endswith(now.shape)
            if kind in ("move", "resize"):
                assert e.attribute == old.shape


def test_instructions_name_their_shape_unambiguously():
    two_circles = make_scene(
        [
            ShapeAttrs("red", "circle", "left", "small"),
            ShapeAttrs("red", "circle", "right", "large"),
        ]
    )
    assert refer(two_circles, 0) == "the red circle on the left"
    mixed = make_scene(
        [ShapeAttrs("red", "circle", "left", "small"), ShapeAttrs("blue", "circle", "top", "small")]
    )
    assert {refer(mixed, 0), refer(mixed, 1)} == {"the red circle", "the blue circle"}
    assert refer(make_scene([ShapeAttrs("red", "circle", "left", "small")]), 0) == "the circle"


def test_moves_stay_on_the_grid_and_off_the_other_shape():
    for e in _edits("move", 200):
        assert len({a.position for a in e.target}) == len(e.target)


def test_held_out_combinations_cover_every_kind_with_known_attributes():
    assert {k for k, _ in HELDOUT_EDITS} == set(EDIT_KINDS)
    for kind, value in HELDOUT_EDITS:
        assert value in COLORS or value in SHAPES
        # the attribute itself is seen in training under the other kinds
        assert any(v == value for k, v in HELDOUT_EDITS if k == kind)
    flags = [e.heldout for kind in EDIT_KINDS for e in _edits(kind, 120, seed=3)]
    assert 0.1 < np.mean(flags) < 0.35


def test_targets_render_and_read_back_exactly():
    rng = np.random.default_rng(7)
    for n in range(30):
        e = sample_edit(rng)
        before, after = render_scenes([e.source, e.target], seed=n)
        assert check_scene(before) == e.source and check_scene(after) == e.target


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown edit kind"):
        sample_edit(np.random.default_rng(0), "explode")
