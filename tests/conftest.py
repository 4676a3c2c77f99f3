"""Settings shared by every unit test."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_cpu_thread():
    """The tests use tiny tensors: on a busy 2-core machine extra threads only wait on each other (up to 30x
    slower), and one thread also keeps reductions in the same order on every run."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
