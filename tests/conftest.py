"""Settings shared by the whole suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests use tiny tensors: intra-op threads only add synchronisation, badly so on a loaded
    2-core CI machine (a tiny Linear measured ~1000x slower). Kernels' own numba threads are
    unaffected, and tests that need torch's threads set them themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
