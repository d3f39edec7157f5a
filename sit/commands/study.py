"""`sit study`: the SiT paper's design-space study (Tables 2-6, Figs. 4-5) at a chosen scale."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  sit study --out studies/demo                  # embedded digits, 6 cells x 3 seeds: 31 min measured on 2 shared cores
  sit study --quick --out studies/quick         # 2 seeds, fewer steps: about 10 min
  sit study --list --out studies/demo           # the cells and which (cell, seed) are done
  sit study --out studies/demo --only vp-velocity/1   # one (cell, seed): a job-array task
  sit study --out studies/demo --report-only    # merge whatever is done into study.md
  sit study --latents latents/in256 --model SiT-B/2 --steps 400000 --batch 256 --only linear-velocity --out studies/b2

Each cell is one trained model (shared by every table it appears in), trained with the same
network, optimiser, EMA and budget as every other cell, then sampled with fixed seeds. The
report (study.md, cells.csv/json, fig_*.png) says claim by claim whether the paper's ordering
holds at this scale: holds / does not hold / inconclusive (95% CIs over seeds overlap).
A killed study continues where it stopped; a changed setting is refused for an existing folder.
"""

BUDGET_FLAGS = ("steps", "batch", "seeds", "samples_per_class", "nfe")


def register(subparsers) -> None:
    from sit.study.cells import DEFAULT_BUDGET, QUICK_BUDGET

    p = subparsers.add_parser("study", help="the paper's design-space study (Tables 2-6, Figs. 4-5) with a report",
                              description=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="studies/demo", metavar="DIR", help="study folder (default %(default)s)")
    p.add_argument("--quick", action="store_true",
                   help=f"the quick budget ({QUICK_BUDGET.steps} steps, {QUICK_BUDGET.seeds} seeds, "
                        f"NFE {QUICK_BUDGET.nfe}) instead of the default")
    b = p.add_argument_group("budget (every cell the same; default: sit.study.cells.DEFAULT_BUDGET)")
    b.add_argument("--steps", type=int, metavar="N", help=f"optimizer steps per model (default {DEFAULT_BUDGET.steps})")
    b.add_argument("--train-minutes", type=float, metavar="MIN",
                   help="wall-time budget per trained model instead of --steps: turned into one step count "
                        "for all cells by timing a short run")
    b.add_argument("--batch", type=int, metavar="N", help=f"images per step (default {DEFAULT_BUDGET.batch})")
    b.add_argument("--seeds", type=int, metavar="N", help=f"seeds per cell, >= 2 (default {DEFAULT_BUDGET.seeds})")
    b.add_argument("--samples-per-class", type=int, metavar="N",
                   help=f"samples per class per quality number (default {DEFAULT_BUDGET.samples_per_class})")
    b.add_argument("--nfe", type=int, metavar="N", help=f"network evaluations per sample (default {DEFAULT_BUDGET.nfe})")
    c = p.add_argument_group("which cells")
    c.add_argument("--cells", metavar="LIST", help="comma list of cells, 'all' or 'default' (default: default)")
    c.add_argument("--only", action="append", metavar="CELL[/SEED]", help="run only this cell (or one seed of it); repeatable")
    c.add_argument("--list", action="store_true", help="print the cells (and their status in --out) and exit")
    c.add_argument("--report-only", action="store_true", help="train nothing: write the report from the finished cells")
    c.add_argument("--no-report", action="store_true", help="do not write the report after running")
    d = p.add_argument_group("data and network (default: the embedded digits demo and its network)")
    d.add_argument("--dataset", choices=["digits", "mnist_5k"], help="embedded dataset (default digits)")
    d.add_argument("--latents", metavar="DIR", help="pre-extracted latents (`sit extract`)")
    d.add_argument("--data", metavar="DIR", help="ImageFolder root, encoded by --vae")
    d.add_argument("--vae", metavar="PATH", help="SD VAE folder for --data")
    d.add_argument("--image-size", type=int, metavar="PX")
    d.add_argument("--model", metavar="NAME", help="network preset (SiT-S/2 ... SiT-XL/8; default: the demo's)")
    for name in ("depth", "hidden_size", "num_heads", "patch_size"):
        d.add_argument("--" + name.replace("_", "-"), type=int, metavar="N")
    d.add_argument("--jobs", type=int, metavar="N",
                   help="worker processes, one (cell, seed) each (default: 2 for the embedded study on >= 2 CPU "
                        "cores, else 1)")
    d.add_argument("--device", help="cpu / cuda (default: cuda if available)")
    d.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: the demo's 1)")
    p.set_defaults(func=run)


STUDY_TRAIN = dict(time_dist="uniform", lr=1e-3)  # on top of `sit train`'s resolution


def _base(args):
    """(TrainConfig, ModelConfig) of the study's network and optimiser: `sit train`'s resolution
    (the demo's defaults without --data/--latents)."""
    from sit.commands.train import TRAIN_FLAGS, resolve

    names = set(TRAIN_FLAGS) | {"depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "learn_sigma",
                                "label_dropout", "model", "no_progress"}
    ns = argparse.Namespace(**{k: None for k in names})
    for k in ("dataset", "latents", "data", "vae", "image_size", "model", "depth", "hidden_size", "num_heads",
              "patch_size", "device", "threads"):
        setattr(ns, k, getattr(args, k))
    ns.no_progress = True
    cfg, mc = resolve(ns)
    # the paper trains with uniform t; the study keeps that (and the lr it was measured with), whatever
    # the demo's own recipe is tuned to
    return dataclasses.replace(cfg, **STUDY_TRAIN), mc


def _budget(args, out: Path):
    from sit.study.cells import DEFAULT_BUDGET, QUICK_BUDGET

    b = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    given = {k: getattr(args, k) for k in BUDGET_FLAGS if getattr(args, k) is not None}
    return dataclasses.replace(b, **given)


def build_study(args):
    from sit.study.cells import select_cells
    from sit.study.run import Study

    out = Path(args.out)
    if args.train_minutes is not None and args.steps is not None:
        raise ValueError("give --steps or --train-minutes, not both")
    cfg, mc = _base(args)
    budget = _budget(args, out)
    warmup = min(cfg.warmup_steps, budget.steps // 5)
    cfg = dataclasses.replace(cfg, warmup_steps=warmup)
    study = Study(out, cfg, mc, budget, select_cells(args.cells))
    if args.train_minutes is not None:
        from sit.study.calibrate import steps_for_minutes

        study = dataclasses.replace(study, budget=dataclasses.replace(
            budget, steps=steps_for_minutes(study, args.train_minutes, log=print), train_minutes=args.train_minutes))
        study = dataclasses.replace(study, base=dataclasses.replace(cfg, warmup_steps=min(cfg.warmup_steps,
                                                                                          study.budget.steps // 5)))
    return study


def _list(study) -> int:
    import re

    from sit.io import read_json
    from sit.study.cells import CELLS

    names = {c.name for c in study.cells}
    seeds = study.budget.seeds
    if (study.out / "study_config.json").is_file():  # an existing study: its own seed count, not the flags'
        try:
            seeds = int(read_json(study.out / "study_config.json", "study config")["identity"]["budget"]["seeds"])
        except (ValueError, KeyError, TypeError):
            pass
    print(f"{'cell':18s} {'in study':8s} {'objective':11s} label / done seeds in {str(study.out)!r}")
    for c in CELLS:
        found = [re.fullmatch(rf"{re.escape(c.name)}-s(\d+)\.json", p.name) for p in study.result_path(c, 0).parent.glob("*.json")]
        done = sorted(int(m.group(1)) for m in found if m)
        print(f"{c.name:18s} {'yes' if c.name in names else 'no':8s} {c.objective:11s} {c.label} ({c.time_input}); "
              f"done seeds {done or 'none'} of {seeds}")
    return 0


def _jobs(args, study) -> int:
    import os

    if args.jobs is not None:
        return args.jobs
    embedded = study.base.data is None and study.base.latents is None
    return 2 if embedded and (os.cpu_count() or 1) >= 2 and study.base.device in (None, "cpu") else 1


def run(args: argparse.Namespace) -> int:
    from sit.study.cells import parse_only
    from sit.study.report import write_report
    from sit.study.run import run_study

    if args.report_only:
        if not (Path(args.out) / "study_config.json").is_file():
            raise FileNotFoundError(f"--report-only: no study in {args.out!r} (study_config.json missing)")
        print(f"sit study: report {str(write_report(Path(args.out)))!r}")
        return 0
    study = build_study(args)
    if args.list:
        return _list(study)
    only = [parse_only(s, study.cells, study.budget.seeds) for s in (args.only or [])]
    run_study(study, only=only or None, log=lambda s: print(s, flush=True), jobs=_jobs(args, study))
    if not args.no_report:
        print(f"sit study: report {str(write_report(study.out))!r}")
    sys.stdout.flush()
    return 0
