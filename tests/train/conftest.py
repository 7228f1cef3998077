import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread for the test (training steps on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
