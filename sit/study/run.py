"""Train and evaluate one (cell, seed), and drive a whole study (resumable, with ETAs).

Layout of a study folder:
  study_config.json        the settings (identity): a changed setting is refused
  runs/CELL-sSEED/         the training run of sit.train (checkpoints, metrics.jsonl, ...)
  results/CELL-sSEED.json  everything measured for that (cell, seed), written atomically last
  study.md, cells.csv, cells.json, fig_*.png   the report (sit.study.report)
A (cell, seed) without its result JSON is not finished: a resumed study trains it again from
step 0 (its run folder is removed first), and a finished one is never retrained.

Split by concern (every name re-exported here): the `Study` record, its identity and per-cell
configs in `sit.study.config`, cost estimates in `sit.study.cost`, the measurements of a trained
unit in `sit.study.evaluation`, worker processes and ETAs in `sit.study.workers`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable

from sit.config import ConfigError
from sit.study.cells import Cell
from sit.study.config import (  # noqa: F401  re-exported: the Study record, its identity and per-cell configs
    CONFIG_NAME,
    STUDY_EMBEDDED_LR,
    STUDY_EMBEDDED_PREVIEW,
    STUDY_TRAIN,
    STUDY_VERSION,
    Study,
    cell_configs,
    check_identity,
    segments,
    study_base,
)
from sit.study.cost import ASSUMED_TFLOPS, unit_cost  # noqa: F401  re-exported
from sit.study.evaluation import (  # noqa: F401  re-exported: what is measured of a trained unit
    HELDOUT_ITEMS,
    EvalData,
    eval_data,
    evaluate_cell,
    loss_table,
    path_length,
)
from sit.study.records import check_latents, load_results, unit_lock  # noqa: F401  (load_results: re-exported)
from sit.study.workers import (  # noqa: F401  re-exported: worker processes and ETAs
    _DATA,
    _dur,
    _eta,
    _eta_line,
    _run_parallel,
    _worker_init,
    _worker_run,
    worker_threads,
)


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


def run_study(study: Study, only: list[tuple[str, int | None]] | None = None,
              log: Callable[[str], None] = print, jobs: int = 1) -> list[dict]:
    """Run every unfinished (cell, seed) of ``study`` (or those named by ``only``), with progress
    and ETAs, in ``jobs`` worker processes (1: in this process); returns the results run now."""
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError("", "jobs", f"must be an integer >= 1 (got {jobs!r})")
    from sit.study.scoring import check_inputs

    check_inputs(study)   # before the study folder is written
    check_identity(study)
    check_latents(study, log)
    todo = [(c, s) for c, s in study.units()
            if not only or any(c.name == n and (ss is None or ss == s) for n, ss in only)]
    done_times: dict[str, list[float]] = {}
    for r in load_results(study.out):
        done_times.setdefault(r["cell"], []).append(r["wall_s"]["total"])
    pending = [(c, s) for c, s in todo if not study.result_path(c, s).is_file()]
    log(f"sit study: {len(todo) - len(pending)} of {len(todo)} (cell, seed) units already done; {len(pending)} to run")
    if not pending:
        return []
    t_start = time.perf_counter()
    from sit.train.log import missing_tensorboard_said_once

    with missing_tensorboard_said_once(log, f"{str(study.out / 'runs')!r}/CELL-sSEED/metrics.jsonl of each unit"):
        if jobs == 1:
            _worker_init(study)
            out = []
            for i, (cell, seed) in enumerate(pending):
                log(f"sit study: [{i + 1}/{len(pending)}] {_eta_line(done_times, cell, seed, pending[i:], 1, t_start)}")
                rec = run_unit(study, cell, seed, _DATA[0], log)
                done_times.setdefault(cell.name, []).append(rec["wall_s"]["total"])
                out.append(rec)
        else:
            out = _run_parallel(study, pending, done_times, jobs, t_start, log)
    log(f"sit study: ran {len(out)} units in {_dur(time.perf_counter() - t_start)}")
    return out


