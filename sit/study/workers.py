"""A study's worker processes (``sit study --jobs N``: spawned, each with its own torch threads and
evaluation data, dying with the parent) and the ETA lines. Split from `sit.study.run`, which
re-exports it; a worker runs `sit.study.unit.run_unit`.

Must not import: ``sit.study.run`` (it imports this), ``sit.commands``.
"""

from __future__ import annotations

import os
import time

import torch

from sit.study.cells import Cell
from sit.study.config import Study
from sit.study.evaluation import EvalData, eval_data
from sit.study.unit import _dur, run_unit

_DATA: list[EvalData] = []


def worker_threads(requested: int, jobs: int) -> int:
    """Torch threads of each of ``jobs`` study workers: ``requested`` when > 0, else the usable cores
    shared out (at least 1). A spawned worker left at torch's default takes every core, so 2 workers
    on 2 cores ran 4 threads and each training step took 2.2x as long (0.80 s against 0.37 s)."""
    if requested > 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, jobs))


def _worker_init(study: Study, worker: bool = False, jobs: int = 1) -> None:
    """Per process: torch threads, the evaluation data, and (a Linux worker) die with the parent."""
    if worker:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").prctl(1, 9)   # PR_SET_PDEATHSIG = SIGKILL: no orphans after a kill
        except (OSError, AttributeError):
            pass
    if worker:
        from sit.train.log import SAY_MISSING_TENSORBOARD

        SAY_MISSING_TENSORBOARD[0] = False   # the parent said it once for every unit
        torch.set_num_threads(worker_threads(study.base.threads, jobs))
    elif study.base.threads > 0:
        torch.set_num_threads(study.base.threads)
    _DATA[:] = [eval_data(study)]


def _worker_run(study: Study, cell_name: str, seed: int, line: str) -> dict:
    from sit.study.cells import CELL_BY_NAME

    print(line, flush=True)
    return run_unit(study, CELL_BY_NAME[cell_name], seed, _DATA[0], lambda s: print(s, flush=True))


def _run_parallel(study, pending, done_times, jobs, t_start, log) -> list[dict]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    out, futs, queue = [], {}, list(enumerate(pending))
    ctx = multiprocessing.get_context("spawn")

    def submit(ex):   # one unit per free worker, so its ETA line uses the times known now
        i, (cell, seed) = queue.pop(0)
        line = f"sit study: [{i + 1}/{len(pending)}] {_eta_line(done_times, cell, seed, pending[i:], jobs, t_start)}"
        fut = ex.submit(_worker_run, study, cell.name, seed, line)
        futs[fut] = (cell, seed)
        return fut

    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(study, True, jobs)) as ex:
        while queue and len(futs) < jobs:
            submit(ex)
        left = set(futs)
        while left:
            finished, left = wait(left, return_when=FIRST_COMPLETED)
            for f in finished:
                cell, seed = futs[f]
                if f.exception() is not None:
                    ex.shutdown(cancel_futures=True)
                    raise f.exception()
                rec = f.result()
                done_times.setdefault(cell.name, []).append(rec["wall_s"]["total"])
                out.append(rec)
                rest = [futs[g][0] for g in left] + [c for _, (c, _) in queue]
                _, e_all = _eta(done_times, cell, rest)
                log(f"sit study: done {cell.name} seed {seed} in {_dur(rec['wall_s']['total'])}; {len(rest)} left, "
                    f"study ETA ~{_dur((e_all or 0) / jobs)} ({_dur(time.perf_counter() - t_start)} elapsed)")
                if queue:
                    left.add(submit(ex))
    return out


def _eta_line(done_times, cell, seed, rest, jobs, t_start) -> str:
    e_unit, e_all = _eta(done_times, cell, [c for c, _ in rest])
    eta = "ETA: estimating after the first unit" if e_unit is None else \
        f"ETA this unit ~{_dur(e_unit)}, study ~{_dur(e_all / jobs)}"
    return f"cell {cell.name} seed {seed} ({eta}; {_dur(time.perf_counter() - t_start)} elapsed)"


def _eta(done: dict[str, list[float]], cell: Cell, remaining: list[Cell]) -> tuple[float | None, float | None]:
    allv = [v for vs in done.values() for v in vs]
    if not allv:
        return None, None
    mean = sum(allv) / len(allv)

    def est(c: Cell) -> float:
        vs = done.get(c.name)
        return sum(vs) / len(vs) if vs else mean

    return est(cell), sum(est(c) for c in remaining)
