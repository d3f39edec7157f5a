"""`--train-minutes`: one step count for every cell from a wall-time budget, by timing a short run."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Callable


def steps_for_minutes(study, minutes: float, log: Callable[[str], None] = print) -> int:
    """Steps that fit ``minutes`` of training per model: the time of a 30-step run minus a
    10-step run (start-up cancels) gives seconds per step, measured on the Linear velocity cell.
    A study folder that was calibrated for the same minutes keeps its step count (resume)."""
    from sit.study.cells import CELL_BY_NAME
    from sit.study.run import CONFIG_NAME, cell_configs
    from sit.train import train

    if not (minutes > 0):
        raise ValueError(f"--train-minutes must be > 0 (got {minutes})")
    f = Path(study.out) / CONFIG_NAME
    if f.is_file():
        cal = json.loads(f.read_text()).get("identity", {}).get("budget", {})
        if cal.get("train_minutes") == minutes:
            return int(cal["steps"])
    cell = CELL_BY_NAME["linear-velocity"]
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 30):
            cfg, mc = cell_configs(study, cell, 0)
            cfg = dataclasses.replace(cfg, out=str(Path(tmp) / f"run{n}"), steps=n, ckpt_every=n, warmup_steps=0)
            t0 = time.perf_counter()
            train(cfg, mc)
            times[n] = time.perf_counter() - t0
    per_step = max((times[30] - times[10]) / 20, 1e-6)
    steps = max(1, int(minutes * 60 / per_step))
    log(f"sit study: {per_step:.3f} s per step -> {steps} steps for {minutes:g} min of training per model")
    return steps
