"""Shared test settings.

The tests use tiny tensors, for which torch's thread pool costs more than it gains (about 30x
slower on a loaded 2-core machine): run them on one thread unless SIT_TEST_THREADS says otherwise.
"""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SIT_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def restore_threads():
    """In-process `sit.cli.main` calls set torch's threads (the free-core default); put the test
    setting back after every test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
