import json

import numpy as np
import pytest

from tessera.common.errors import InvalidArgument, NotFound
from tessera.data import ImageTextDataset, load_dataset, shapes


@pytest.fixture
def prepared(tmp_path):
    shapes.prepare(tmp_path, per_combo=1)
    return tmp_path


def test_missing_data_names_the_command(tmp_path):
    with pytest.raises(NotFound, match="tessera data prepare twemoji"):
        load_dataset("twemoji", "train", tmp_path)
    with pytest.raises(NotFound, match="tessera data prepare shapes"):
        load_dataset("shapes", "heldout", tmp_path)


def test_unknown_name_and_split(prepared):
    with pytest.raises(NotFound):
        load_dataset("mnist", "train", prepared)
    with pytest.raises(InvalidArgument):
        load_dataset("shapes", "test", prepared)


def test_round_trip(prepared):
    ds = load_dataset("shapes", "all", prepared)
    assert isinstance(ds, ImageTextDataset)
    assert ds.images.shape == (432, 64, 64, 3) and ds.images.dtype == np.uint8
    assert len(ds.captions) == len(ds.keys) == 432
    assert set(ds.labels) == {"color", "shape", "position", "size"}
    assert all(v.dtype == np.int64 and v.shape == (432,) for v in ds.labels.values())
    assert ds.captions[0][0] == "a small red circle at the top left"
    again = load_dataset("shapes", "all", prepared)
    assert again.keys == ds.keys and np.array_equal(again.images, ds.images)


def test_truncated_images_file(prepared):
    path = prepared / "shapes" / "images.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(NotFound, match="corrupt.*tessera data prepare shapes"):
        load_dataset("shapes", "train", prepared)


def test_garbage_and_inconsistent_meta(prepared):
    meta_path = prepared / "shapes" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{not json")
    with pytest.raises(NotFound, match="tessera data prepare shapes"):
        load_dataset("shapes", "train", prepared)
    meta["keys"] = meta["keys"][:-1]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(NotFound, match="inconsistent"):
        load_dataset("shapes", "train", prepared)


def test_pickled_arrays_are_refused(prepared):
    # an object array needs pickle to load; allow_pickle=False must turn it into NotFound
    path = prepared / "shapes" / "images.npz"
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["images"] = np.array([object()] * 432, dtype=object)
    np.savez(path, **arrays)
    with pytest.raises(NotFound):
        load_dataset("shapes", "train", prepared)
