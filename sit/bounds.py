"""Bounds checked before anything is allocated (stdlib only): step counts, torch CPU threads, and
the latent scale / shift values float32 holds.

A step count or thread count beyond them is a typo, and honouring it allocates a grid that
OOM-kills the machine or crashes inside torch. Re-exported by `sit.config`. Must not import:
anything of sit.
"""

from __future__ import annotations

import math
import struct
from typing import Any

# the latent scale / shift must survive float32 (the latents' dtype): 1e-320 is a float64 > 0 that
# float32 rounds to 0, so every latent would be 0
FLOAT32_TINY = 1.1754943508222875e-38   # the smallest normal float32
FLOAT32_MAX = 3.4028234663852886e38


def latent_value_problem(name: str, v: Any) -> str | None:
    """What is wrong with a latent ``scale`` or ``shift`` value (None: fine): a finite number that
    float32 (the latents' dtype) holds; the scale > 0 and a normal float32, so it never rounds to 0."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) and abs(v) <= FLOAT32_MAX
    if name == "scale":
        if ok and v >= FLOAT32_TINY:
            return None
        under = "" if not (ok and 0 < v < FLOAT32_TINY) else \
            ": float32 rounds it to 0" if struct.unpack("f", struct.pack("f", v))[0] == 0 else ": below float32's normal range"
        return f"must be a finite number > 0 that float32 holds, in [{FLOAT32_TINY:.4g}, {FLOAT32_MAX:.4g}] (got {v!r}{under})"
    return None if ok else f"must be a finite number that float32 holds, |{name}| <= {FLOAT32_MAX:.4g} (got {v!r})"


MAX_STEPS = 100_000          # sampler / likelihood / preview steps (the paper uses at most 1000)
MAX_THREADS_PER_CORE = 4     # torch CPU threads: at most this many per usable core


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_steps(n: Any, what: str) -> None:
    """ValueError '{what} must be an integer in [1, MAX_STEPS] (got n)' for anything else."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_STEPS:
        raise ValueError(f"{what} must be an integer in [1, {MAX_STEPS}] (got {n!r})")


def max_threads() -> int:
    """The most torch CPU threads sit sets: MAX_THREADS_PER_CORE x the usable cores."""
    return MAX_THREADS_PER_CORE * usable_cores()


def check_threads(n: Any, what: str) -> None:
    """ValueError unless ``n`` is 0 (torch's own default) or 1 .. MAX_THREADS_PER_CORE x usable cores."""
    top = max_threads()
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= top:
        raise ValueError(f"{what} must be 0 (torch's default) or 1 .. {top} ({MAX_THREADS_PER_CORE} x "
                         f"{usable_cores()} usable cores) (got {n!r})")
