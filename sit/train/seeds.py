"""Deterministic randomness of a run: seeds from integer keys, and the global RNG states saved
in every checkpoint (exact resume).

Everything random in a step is a function of (seed, step): the global batch of step s is the slice
s of a per-epoch permutation seeded by (seed, 1, epoch); t, eps and the label-dropout mask of the
whole global micro-batch come from the generator (seed, 2, step, micro), the VAE posterior noise
from (seed, 3, step, micro); each rank takes its rows.
"""

from __future__ import annotations

import base64
import random

import numpy as np
import torch


def seed_of(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence hashing: distinct keys, distinct seeds)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded by `seed_of` ``keys``."""
    return torch.Generator().manual_seed(seed_of(*keys))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def rng_state() -> dict:
    """torch / numpy / python global RNG states as JSON-safe values (base64 / lists)."""
    np_state = np.random.get_state()
    py = random.getstate()
    out = {
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "numpy": [np_state[0], _b64(np_state[1].astype(np.uint32).tobytes()), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py[0], list(py[1]), py[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.frombuffer(base64.b64decode(n[1]), dtype=np.uint32).copy(), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        cs = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        if len(cs) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cs)
