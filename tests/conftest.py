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


@pytest.fixture(scope="session")
def tiny_run_and_samples(tmp_path_factory):
    """(run folder of a 2-step tiny `sit train`, sample folder `sit sample` made from it), made once
    and shared by the CLI tests that only read them."""
    from tiny_cli import TINY_SAMPLE_FLAGS, TINY_TRAIN_FLAGS

    from sit.cli import main

    root = tmp_path_factory.mktemp("kinds")
    run, samples = root / "run", root / "samples"
    assert main(["train", "--out", str(run), *TINY_TRAIN_FLAGS]) == 0
    assert main(["sample", "--ckpt", str(run), "--out", str(samples), *TINY_SAMPLE_FLAGS]) == 0
    return run, samples
