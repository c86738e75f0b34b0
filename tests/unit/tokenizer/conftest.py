import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run many times faster on one thread than on two when the machine's
    two cores are shared (OpenMP workers wait on each other); restore afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
