import json

import numpy as np
import pytest
from PIL import Image

from tessera.common.settings import get_settings
from tessera.data import load_dataset, twemoji


def _png(path, rgba):
    Image.new("RGBA", (64, 64), rgba).save(path)


@pytest.fixture
def fake_npm(tmp_path):
    """A miniature of the two npm packages: 4 emoji, one with skin tones, one whose image
    name has FE0F where emojibase has none, one without a group."""
    root = tmp_path / "npm" / "node_modules"
    img = root / "emoji-datasource-twitter" / "img" / "twitter" / "64"
    img.mkdir(parents=True)
    base = root / "emojibase-data" / "en"
    base.mkdir(parents=True)
    _png(img / "1f600.png", (255, 200, 0, 255))
    _png(img / "2764-fe0f.png", (200, 0, 0, 0))  # fully transparent: composites to white
    _png(img / "1f44b.png", (255, 200, 0, 255))
    _png(img / "1f44b-1f3fb.png", (250, 220, 190, 255))
    _png(img / "1f1e6.png", (0, 0, 255, 255))
    data = [
        {"label": "grinning face", "hexcode": "1F600", "tags": ["face", "grin"],
         "group": 0, "subgroup": 0},
        {"label": "red heart", "hexcode": "2764", "tags": ["heart"], "group": 0, "subgroup": 1},
        {"label": "waving hand", "hexcode": "1F44B", "tags": ["hand", "wave"], "group": 1,
         "subgroup": 2, "skins": [{"label": "waving hand: light skin tone",
                                   "hexcode": "1F44B-1F3FB", "group": 1, "subgroup": 2,
                                   "tone": 1}]},
        {"label": "regional indicator A", "hexcode": "1F1E6"},
    ]  # fmt: skip
    messages = {
        "groups": [{"message": "smileys & emotion", "order": 0},
                   {"message": "people & body", "order": 1},
                   {"message": "symbols", "order": 2}],
        "subgroups": [{"message": "face-smiling", "order": 0}, {"message": "heart", "order": 1},
                      {"message": "hand-fingers-open", "order": 2}],
    }  # fmt: skip
    (base / "data.json").write_text(json.dumps(data))
    (base / "messages.json").write_text(json.dumps(messages))
    return tmp_path


def test_prepare_joins_captions_skins_and_groups(fake_npm):
    twemoji.prepare(fake_npm, install=False, progress=False)
    ds = load_dataset("twemoji", "all", fake_npm)
    by_key = {k: i for i, k in enumerate(ds.keys)}
    assert set(by_key) == {"1F600", "2764", "1F44B", "1F44B-1F3FB", "1F1E6"}
    i = by_key["1F600"]
    assert ds.captions[i][0] == "grinning face"
    assert "grinning face, grin" in ds.captions[i]
    assert ds.label_of("group", i) == "smileys & emotion"
    assert ds.label_of("subgroup", i) == "face-smiling"
    skin = by_key["1F44B-1F3FB"]
    assert ds.captions[skin][0] == "waving hand: light skin tone"
    assert "waving hand with light skin tone" in ds.captions[skin]
    assert ds.label_of("skin_tone", skin) == "light"
    assert ds.label_of("concept", skin) == ds.label_of("concept", by_key["1F44B"]) == "1F44B"
    assert ds.label_of("subgroup", skin) == "hand-fingers-open"
    assert ds.label_of("subgroup", by_key["1F1E6"]) == "regional indicator"
    assert (ds.images[by_key["2764"]] == 255).all()  # transparent -> white
    assert tuple(ds.images[i][0, 0]) == (255, 200, 0)
    assert (fake_npm / "twemoji" / "montage.png").is_file()


def test_missing_packages_without_install(tmp_path):
    from tessera.common.errors import NotFound

    with pytest.raises(NotFound):
        twemoji.prepare(tmp_path, install=False, progress=False)


REAL = get_settings().data_dir


@pytest.mark.skipif(not (REAL / "twemoji" / "images.npz").is_file(), reason="twemoji not prepared")
def test_real_twemoji_split_is_the_documented_one():
    ds = load_dataset("twemoji", "all")
    held = load_dataset("twemoji", "heldout")
    assert len(ds) == 3786
    assert 0.08 < len(held) / len(ds) < 0.13
    # every skin tone of a concept is on the same side of the split
    concept = ds.labels["concept"]
    for c in np.unique(concept):
        assert len(set(ds.heldout[concept == c].tolist())) == 1
    i = ds.keys.index("1F600")
    assert ds.captions[i][0] == "grinning face"
    # the split is pinned: these held-out counts change only if the rule changes
    assert len(held) == 438
    assert {"1F193", "002A-FE0F-20E3", "1F1E8-1F1F1"} <= set(held.keys)
