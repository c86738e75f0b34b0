"""Instruction edits on shapes scenes, with exact answers.

An edit takes a source scene (one or two shapes) and an instruction from a small grammar to a
target scene: recolour ("make the circle red"), remove ("remove the blue square"), add ("add a
small green cross at the top left"), move ("move the triangle to the right"), resize ("make the
square bigger") and reshape ("turn the circle into a square"). The target is computed from
the attributes, so a model's result is scored exactly with :func:`tessera.data.scenes.check_scene`.

Held out: whole (edit kind x attribute) combinations that training never shows, each attribute
still seen under the other kinds (``HELDOUT_EDITS``) — a held-out score measures composition
("recolour" and "purple" are both known; "recolour to purple" is new), not memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from tessera.data.scenes import Scene, make_scene
from tessera.data.shapes import COLORS, POSITION_PHRASES, POSITIONS, SHAPES, SIZES, ShapeAttrs

EDIT_KINDS = ("recolor", "remove", "add", "move", "resize", "reshape")
# What each kind's held-out attribute names: the new colour (recolor), the new shape
# (reshape), the added shape's colour (add), the moved / resized shape's shape, the removed
# shape's colour.
HELDOUT_EDITS = frozenset(
    {
        ("recolor", "purple"),
        ("reshape", "triangle"),
        ("add", "orange"),
        ("move", "cross"),
        ("resize", "circle"),
        ("remove", "green"),
    }
)
MOVES = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
_MOVE_WORDS = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
_TEMPLATES = {
    "recolor": ("make {ref} {value}", "colour {ref} {value}", "paint {ref} {value}"),
    "remove": ("remove {ref}", "delete {ref}", "take away {ref}"),
    "add": ("add {value}", "put {value}", "draw {value}"),
    "move": ("move {ref} {value}", "shift {ref} {value}"),
    "resize": ("make {ref} {value}", "resize {ref} to be {value}"),
    "reshape": ("turn {ref} into a {value}", "change {ref} into a {value}"),
}


@dataclass(frozen=True)
class Edit:
    kind: str
    instruction: str
    source: Scene
    target: Scene
    attribute: str  # the value HELDOUT_EDITS pairs with ``kind``

    @property
    def heldout(self) -> bool:
        return (self.kind, self.attribute) in HELDOUT_EDITS


def refer(scene: Scene, i: int) -> str:
    """The shortest unambiguous name of shape ``i``: 'the circle', 'the red circle', or 'the
    red circle on the left'."""
    a = scene[i]
    others = [b for j, b in enumerate(scene) if j != i]
    if all(b.shape != a.shape for b in others):
        return f"the {a.shape}"
    if all((b.color, b.shape) != (a.color, a.shape) for b in others):
        return f"the {a.color} {a.shape}"
    return f"the {a.color} {a.shape} {POSITION_PHRASES[a.position]}"


def _moved(position: str, direction: str) -> str | None:
    row, col = divmod(POSITIONS.index(position), 3)
    dr, dc = MOVES[direction]
    row, col = row + dr, col + dc
    return POSITIONS[row * 3 + col] if 0 <= row < 3 and 0 <= col < 3 else None


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _say(rng: np.random.Generator, kind: str, **fields: str) -> str:
    return _pick(rng, _TEMPLATES[kind]).format(**fields)


# Each rule: (rng, source scene, index of the shape it edits) -> (instruction, target, attribute)
# or None when the edit does not apply (e.g. moving off the grid, recolouring to the same colour).
Rule = Callable[[np.random.Generator, Scene, int], "tuple[str, Scene, str] | None"]


def _recolor(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    color = _pick(rng, [c for c in COLORS if c != src[i].color])
    target = make_scene([replace(a, color=color) if j == i else a for j, a in enumerate(src)])
    return _say(rng, "recolor", ref=refer(src, i), value=color), target, color


def _remove(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    if len(src) < 2:  # an empty canvas is not a scene
        return None
    target = make_scene([a for j, a in enumerate(src) if j != i])
    return _say(rng, "remove", ref=refer(src, i)), target, src[i].color


def _add(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    free = [p for p in POSITIONS if all(a.position != p for a in src)]
    if len(src) >= 2 or not free:
        return None
    new = ShapeAttrs(
        _pick(rng, list(COLORS)), _pick(rng, SHAPES), _pick(rng, free), _pick(rng, list(SIZES))
    )
    what = f"a {new.size} {new.color} {new.shape} {POSITION_PHRASES[new.position]}"
    return _say(rng, "add", value=what), make_scene([*src, new]), new.color


def _move(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    taken = {a.position for j, a in enumerate(src) if j != i}
    options = [d for d in MOVES if _moved(src[i].position, d) not in (None, *taken)]
    if not options:
        return None
    direction = _pick(rng, options)
    position = _moved(src[i].position, direction)
    assert position is not None
    target = make_scene([replace(a, position=position) if j == i else a for j, a in enumerate(src)])
    return _say(rng, "move", ref=refer(src, i), value=_MOVE_WORDS[direction]), target, src[i].shape


def _resize(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    size, word = ("large", _pick(rng, ("bigger", "larger")))
    if src[i].size == "large":
        size, word = "small", "smaller"
    target = make_scene([replace(a, size=size) if j == i else a for j, a in enumerate(src)])
    return _say(rng, "resize", ref=refer(src, i), value=word), target, src[i].shape


def _reshape(rng: np.random.Generator, src: Scene, i: int) -> tuple[str, Scene, str] | None:
    shape = _pick(rng, [s for s in SHAPES if s != src[i].shape])
    target = make_scene([replace(a, shape=shape) if j == i else a for j, a in enumerate(src)])
    return _say(rng, "reshape", ref=refer(src, i), value=shape), target, shape


RULES: dict[str, Rule] = {
    "recolor": _recolor,
    "remove": _remove,
    "add": _add,
    "move": _move,
    "resize": _resize,
    "reshape": _reshape,
}


def random_scene(rng: np.random.Generator, shapes: int) -> Scene:
    """``shapes`` random shapes in distinct cells."""
    cells = rng.choice(len(POSITIONS), size=shapes, replace=False)
    return make_scene(
        [
            ShapeAttrs(
                _pick(rng, list(COLORS)), _pick(rng, SHAPES), POSITIONS[c], _pick(rng, list(SIZES))
            )
            for c in cells
        ]
    )


def sample_edit(rng: np.random.Generator, kind: str | None = None) -> Edit:
    """One random edit (of ``kind``, else a uniformly drawn kind) that applies to its scene."""
    kind = kind or _pick(rng, EDIT_KINDS)
    if kind not in RULES:
        raise ValueError(f"unknown edit kind {kind!r}; expected one of {list(EDIT_KINDS)}")
    while True:
        shapes = 1 if kind == "add" else 2 if kind == "remove" else int(rng.integers(1, 3))
        src = random_scene(rng, shapes)
        i = int(rng.integers(len(src)))
        made = RULES[kind](rng, src, i)
        if made is not None:
            instruction, target, attribute = made
            return Edit(kind, instruction, src, target, attribute)
