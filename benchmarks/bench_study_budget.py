"""Per-step training cost of the default `sit study` network, and the study's estimated wall time.

Times ``--steps`` steps (after a short warm-up run) of one cell with ``sit.train.train`` on one
torch thread at each ``--batch``, in CPU seconds (``time.process_time``, less sensitive to other
jobs on a shared host than wall time), then prints the estimated CPU time and wall time on
``--cores`` idle cores of a study of 6 cells x 3 seeds at ``--study-steps`` x each batch, adding
``--eval-cpu`` CPU seconds of evaluation for the whole study (measured on the default study).
Prints figures only.

    python benchmarks/bench_study_budget.py --batch 64,256
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", default="64,256")
    ap.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    ap.add_argument("--study-steps", type=int, default=None, help="steps per model (default: DEFAULT_BUDGET.steps)")
    ap.add_argument("--cell", default="vp-velocity")
    ap.add_argument("--units", type=int, default=18, help="(cell, seed) units of the study (default 6 x 3)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--eval-cpu", type=float, default=480.0,
                    help="CPU seconds of evaluation, whole study (default: the measured default study's 4,364 CPU-s "
                         "less its training, docs/study.md)")
    args = ap.parse_args(argv)

    import torch

    from sit.study.cells import CELL_BY_NAME, DEFAULT_BUDGET, select_cells
    from sit.study.run import Study, cell_configs, study_base
    from sit.train import train

    torch.set_num_threads(1)
    if args.study_steps is None:
        args.study_steps = DEFAULT_BUDGET.steps
    for batch in [int(b) for b in args.batch.split(",")]:
        base, mc = study_base({"threads": 1})
        study = Study(Path("/nonexistent"), base, mc, dataclasses.replace(DEFAULT_BUDGET, batch=batch), select_cells(None))
        cfg, mc = cell_configs(study, CELL_BY_NAME[args.cell], 0)
        with tempfile.TemporaryDirectory() as tmp:
            train(dataclasses.replace(cfg, out=tmp + "/warm", steps=5, ckpt_every=5), mc)
            c0, w0 = time.process_time(), time.perf_counter()
            train(dataclasses.replace(cfg, out=tmp + "/timed", steps=args.steps, ckpt_every=args.steps), mc)
            cpu, wall = (time.process_time() - c0) / args.steps, (time.perf_counter() - w0) / args.steps
        total = args.units * args.study_steps * cpu + args.eval_cpu
        print(f"batch {batch}: {1000 * cpu:.0f} ms CPU / step ({1000 * wall:.0f} ms wall on this host); study of "
              f"{args.units} units x {args.study_steps} steps: ~{total:.0f} CPU-s, ~{total / args.cores / 60:.0f} min "
              f"on {args.cores} idle cores", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
