"""Audio tests run torch on one thread: on a shared 2-core machine two threads spin against other processes
(measured: a 20-step tiny run took 54 s wall with 2 threads and 6 s with 1)."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
