"""Shared test settings.

The tests use tiny tensors, for which torch's thread pool costs more than it gains (about 30x
slower on a loaded 2-core machine): run them on one thread unless SIT_TEST_THREADS says otherwise.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("SIT_TEST_THREADS", "1")))
