import numpy as np

from tessera.training.cache import cached_array


def test_computes_once_and_recomputes_a_torn_or_stale_file(tmp_path):
    path = tmp_path / "cache" / "codes.npy"
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6).reshape(3, 2)

    first = cached_array(path, compute, rows=3)
    again = cached_array(path, compute, rows=3)
    assert np.array_equal(first, again) and len(calls) == 1
    assert not list(path.parent.glob("*.tmp.npy"))  # saved under its real name only
    cached_array(path, compute, rows=4)  # stale: another number of rows
    assert len(calls) == 2
    path.write_bytes(b"torn")
    assert np.array_equal(cached_array(path, compute, rows=3), first) and len(calls) == 3
