"""Train and measure one (cell, seed) of a study: `run_unit` (under the unit's lock, its unfinished
run folder removed first, the result written atomically last) and its training progress lines.
Run by the study driver (`sit.study.run`, which re-exports it) and by its worker processes
(`sit.study.workers`).

Must not import: ``sit.study.run``, ``sit.study.workers``, ``sit.commands``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

from sit.study.cells import Cell
from sit.study.config import Study, cell_configs, segments
from sit.study.evaluation import EvalData, evaluate_cell, path_length
from sit.study.records import unit_lock


def run_unit(study: Study, cell: Cell, seed: int, data: EvalData, log: Callable[[str], None]) -> dict:
    """Train (cell, seed) from step 0, measure it, write results/CELL-sSEED.json atomically; under
    the unit's lock (`sit.study.records.unit_lock`), taken before its unfinished run folder is
    removed, so a second process for the same unit says in one line that it is running."""
    from sit.io import remove_tree

    with unit_lock(study, cell, seed, log):
        done = study.result_path(cell, seed)
        if done.is_file():   # finished by another process while this one waited for its turn
            log(f"  {cell.name} s{seed}: finished meanwhile by another process ({str(done)!r})")
            return json.loads(done.read_text())
        run_dir = study.run_dir(cell, seed)
        if run_dir.exists():
            log(f"  {cell.name} s{seed}: removing the unfinished run {str(run_dir)!r} (restarts from step 0)")
            remove_tree(run_dir)
        return _run_unit(study, cell, seed, data, log, run_dir)


def _run_unit(study: Study, cell: Cell, seed: int, data: EvalData, log: Callable[[str], None], run_dir: Path) -> dict:
    from sit.io import write_json
    from sit.train import train
    from sit.train.loop import Callbacks

    t0, cpu0 = time.perf_counter(), time.process_time()
    cfg, mc = cell_configs(study, cell, seed)
    path_lengths, result = [], None
    cb = Callbacks(after_step=_train_progress(f"  {cell.name} s{seed}", study.budget.steps, log))
    for k, stop in enumerate(segments(study, cell)):
        if k == 0:
            result = train(dataclasses.replace(cfg, steps=stop), mc, callbacks=cb)
        else:
            result = train(resume=run_dir, steps=stop, callbacks=cb)
        if result.status != "done":
            raise RuntimeError(f"training of {cell.name} seed {seed} stopped at step {result.step} ({result.status})")
        if cell.velocity:
            c, se = path_length(result.ema, cell, data, study.budget.path_points, seed)
            path_lengths.append({"step": stop, "C": c, "stderr": se})
        log(f"  {cell.name} s{seed}: trained {stop}/{study.budget.steps} steps ({time.perf_counter() - t0:.0f} s)")
    train_s = time.perf_counter() - t0
    measured = evaluate_cell(result.ema, cell, study, data, seed, log)
    rec = {
        "cell": cell.name, "seed": seed, "path": cell.path, "prediction": cell.prediction,
        "loss_weight": cell.loss_weight, "time_input": cell.time_input, "objective": cell.objective,
        "steps": result.step, "batch": study.budget.batch, "final_loss": _final_loss(run_dir),
        "path_length": path_lengths, **measured,
        "wall_s": {"train": round(train_s, 1), "eval": round(time.perf_counter() - t0 - train_s, 1),
                   "total": round(time.perf_counter() - t0, 1), "cpu": round(time.process_time() - cpu0, 1)},
    }
    write_json(study.result_path(cell, seed), rec)
    return rec


PROGRESS_LINES = 10      # training progress lines per unit (every tenth of the steps)
PROGRESS_MIN_S = 20.0    # ... but not more often than this many seconds apart (except the last)


def _train_progress(prefix: str, total: int, log: Callable[[str], None]) -> Callable[[int], None]:
    """``after_step`` callback: a line "training step k/N (x s/step, ETA ...)" every tenth of
    training (at most one per PROGRESS_MIN_S seconds, and always the last). The rate is the median
    time between consecutive steps, so the C(v) measurements between training segments do not
    inflate it."""
    every = max(1, total // PROGRESS_LINES)
    state = {"prev": None, "t": 0.0, "last": -math.inf}
    deltas: list[float] = []

    def after_step(step: int) -> None:
        now = time.perf_counter()
        if state["prev"] is not None and step == state["prev"] + 1:
            deltas.append(now - state["t"])
        state["prev"], state["t"] = step, now
        if (step % every and step != total) or (now - state["last"] < PROGRESS_MIN_S and step != total):
            return
        state["last"] = now
        per = sorted(deltas)[len(deltas) // 2] if deltas else None   # median: robust to the C(v) pauses
        eta = f", ETA {_dur(per * (total - step))}" if per is not None and step < total else ""
        log(f"{prefix}: training step {step}/{total}" + (f" ({per:.3f} s/step{eta})" if per is not None else ""))

    return after_step


def _final_loss(run_dir: Path) -> float | None:
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        return None
    loss = None
    for line in f.read_text().splitlines():
        try:
            loss = json.loads(line).get("loss", loss)
        except json.JSONDecodeError:
            continue
    return loss


def _dur(s: float) -> str:
    """Seconds as "12s" or "3m05s" (progress and ETA lines)."""
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
