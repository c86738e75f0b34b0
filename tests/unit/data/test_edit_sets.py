import json

import numpy as np
import pytest

from tessera.common.errors import NotFound
from tessera.data.dataset import ImageTextDataset
from tessera.data.edit_sets import (
    make_shapes_edits,
    make_twemoji_edits,
    prepare,
    read_edit_set,
    twemoji_pairs,
)
from tessera.data.scenes import check_scene


def test_shapes_edit_set_round_trips_and_reads_back(tmp_path):
    out = prepare("edits-shapes", tmp_path, seed=1, per_kind=12, progress=False)
    edits = read_edit_set("edits-shapes", tmp_path)
    assert len(edits) == 72 and (out / "montage.png").is_file()
    assert edits.source.shape == edits.target.shape == (72, 64, 64, 3)
    assert {edits.kinds.count(k) for k in set(edits.kinds)} == {12}
    for i in range(0, 72, 5):
        before, after = edits.keys[i].split(">")
        assert "+".join(a.key for a in check_scene(edits.source[i])) == before
        assert "+".join(a.key for a in check_scene(edits.target[i])) == after
    again = make_shapes_edits(seed=1, per_kind=12, progress=False)
    assert again.keys == edits.keys and (again.target == edits.target).all()  # deterministic
    train = edits.subset(~edits.heldout)
    assert len(train) == int((~edits.heldout).sum()) and not train.heldout.any()


def test_missing_or_corrupt_edit_sets_name_the_command(tmp_path):
    with pytest.raises(NotFound, match="tessera data prepare edits-shapes"):
        read_edit_set("edits-shapes", tmp_path)
    prepare("edits-shapes", tmp_path, per_kind=2, progress=False)
    meta = tmp_path / "edits-shapes" / "meta.json"
    data = json.loads(meta.read_text())
    data["count"] = 99
    meta.write_text(json.dumps(data))
    with pytest.raises(NotFound, match="inconsistent"):
        read_edit_set("edits-shapes", tmp_path)


def _emoji(rows):
    """A miniature Twemoji data set: (caption, concept, tone, heldout) per row."""
    concepts = sorted({r[1] for r in rows})
    tones = ["none", "light", "medium-light", "medium", "medium-dark", "dark", "mixed"]
    n = len(rows)
    ds = ImageTextDataset(
        name="twemoji",
        images=np.stack([np.full((64, 64, 3), 10 * i, np.uint8) for i in range(n)]),
        captions=[[r[0]] for r in rows],
        labels={"concept": np.array([concepts.index(r[1]) for r in rows]),
                "skin_tone": np.array([tones.index(r[2]) for r in rows])},
        label_names={"concept": concepts, "skin_tone": tones},
        keys=[f"K{i}" for i in range(n)],
        heldout=np.array([r[3] for r in rows], bool),
    )  # fmt: skip
    return ds


def test_twemoji_pairs_from_skin_tones_and_gender_variants():
    ds = _emoji(
        [
            ("waving hand", "W", "none", False),
            ("waving hand: dark skin tone", "W", "dark", False),
            ("handshake: light skin tone, dark skin tone", "H", "mixed", False),
            ("handshake", "H", "none", False),
            ("person running", "P", "none", False),
            ("man running", "M", "none", False),
            ("woman running", "F", "none", True),
            ("family: man, woman, boy", "X", "none", False),
        ]
    )
    pairs = {(s, t, kind, said) for s, t, kind, said, _ in twemoji_pairs(ds)}
    assert (0, 1, "skin_tone", "give it a dark skin tone") in pairs
    assert (1, 0, "skin_tone", "give it the default yellow skin tone") in pairs
    assert not any(2 in (s, t) for s, t, *_ in pairs)  # mixed tones are not one instruction
    assert (4, 5, "gender", "make it a man") in pairs and (
        5,
        6,
        "gender",
        "make it a woman",
    ) in pairs
    assert not any(7 in (s, t) for s, t, *_ in pairs)  # 'family: man, ...' is no variant
    edits = make_twemoji_edits(ds)
    assert "K5>K6" not in edits.keys  # straddles the split: dropped
    assert "K4>K5" in edits.keys and not edits.heldout.any()
    i = edits.keys.index("K0>K1")
    assert (edits.source[i] == ds.images[0]).all() and (edits.target[i] == ds.images[1]).all()
