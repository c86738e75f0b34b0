import pytest
import torch

from tessera.bundle.random_init import build_random_bundle


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run many times faster on one thread than on two when the machine's
    two cores are shared (OpenMP workers wait on each other); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny random bundle of every component (its path as a string), one per module."""
    path = tmp_path_factory.mktemp("bundle")
    build_random_bundle(path, "tiny", tiny=True, seed=0)
    return str(path)
