"""`--train-minutes`: one step count for every cell from a wall-time budget, by timing a short run."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from typing import Callable

from sit.config import ConfigError


def steps_for_minutes(study, minutes: float, log: Callable[[str], None] = print) -> int:
    """Steps that fit ``minutes`` of training per model: seconds per step are the median over the
    logged windows (after the first) of a 50-step run of the Linear velocity cell.
    A study folder that was calibrated for the same minutes keeps its step count (resume)."""
    from sit.study.cells import CELL_BY_NAME
    from sit.study.run import CONFIG_NAME, cell_configs
    from sit.train import train

    if not (minutes > 0):
        raise ConfigError("", "train_minutes", f"must be > 0 (got {minutes})")
    f = Path(study.out) / CONFIG_NAME
    if f.is_file():
        cal = json.loads(f.read_text()).get("identity", {}).get("budget", {})
        if cal.get("train_minutes") == minutes:
            return int(cal["steps"])
    cell = CELL_BY_NAME["linear-velocity"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg, mc = cell_configs(study, cell, 0)
        cfg = dataclasses.replace(cfg, out=str(Path(tmp) / "run"), steps=50, ckpt_every=50, log_every=10, warmup_steps=0)
        train(cfg, mc)
        rates = [r["img_per_s"] for r in map(json.loads, (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines())
                 if r.get("img_per_s")][1:]   # the first window holds the start-up
    if not rates:
        raise RuntimeError("the timing run of the train_minutes budget logged no throughput")
    per_step = study.budget.batch / sorted(rates)[len(rates) // 2]
    steps = max(1, int(minutes * 60 / per_step))
    log(f"sit study: {per_step:.3f} s per step (median of {len(rates)} windows) -> {steps} steps for {minutes:g} min "
        "of training per model")
    return steps
