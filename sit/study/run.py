"""Drive a whole study (resumable, with ETAs): every unfinished (cell, seed), in this process or
in ``--jobs`` worker processes.

Layout of a study folder:
  study_config.json        the settings (identity): a changed setting is refused
  runs/CELL-sSEED/         the training run of sit.train (checkpoints, metrics.jsonl, ...)
  results/CELL-sSEED.json  everything measured for that (cell, seed), written atomically last
  study.md, cells.csv, cells.json, fig_*.png   the report (sit.study.report)
A (cell, seed) without its result JSON is not finished: a resumed study trains it again from
step 0 (its run folder is removed first), and a finished one is never retrained.

Split by concern (every name re-exported here): the `Study` record, its identity and per-cell
configs in `sit.study.config`, cost estimates in `sit.study.cost`, training and measuring one
(cell, seed) in `sit.study.unit`, the measurements of a trained unit in `sit.study.evaluation`,
worker processes and ETAs in `sit.study.workers`. Nothing of the study imports this module back.
"""

from __future__ import annotations

import time
from typing import Callable

from sit.config import ConfigError
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
from sit.study.unit import PROGRESS_LINES, PROGRESS_MIN_S, _final_loss, _train_progress, run_unit  # noqa: F401
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


