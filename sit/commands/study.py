"""`sit study`: the SiT paper's design-space study (Tables 2-6, Figs. 4-5) at a chosen scale."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from sit.commands._args import option
from sit.commands.flags import add_record_arguments, given_values
from sit.commands.train import default_note, flag_for
from sit.config import ModelConfig, TrainConfig

EXAMPLES = """\
examples:
  sit study --out studies/demo                  # embedded digits, 6 cells x 3 seeds: ~40 min on 2 idle cores
  sit study --quick --out studies/quick         # 2 seeds, fewer steps: about 10 min
  sit study --list --out studies/demo           # the cells and which (cell, seed) are done
  sit study --out studies/demo --only vp-velocity:1   # one (cell, seed): a job-array task
  sit study --out studies/demo --report-only    # merge whatever is done into study.md
  sit study --out studies/demo --dry-run        # every unit's command and estimated cost; runs nothing

  # the paper's scale (SiT-B/2, 400K steps, batch 256) on ImageNet latents, one (cell, seed) per job
  sit study --latents latents/in256 --model SiT-B/2 --steps 400000 --batch 256 --seeds 2 --samples-per-class 10 --out studies/b2 --dry-run
  sit study --latents latents/in256 --model SiT-B/2 --steps 400000 --batch 256 --seeds 2 --samples-per-class 10 --out studies/b2 --only linear-velocity:0

Each cell is one trained model (shared by every table it appears in), trained with the same
network, optimiser, EMA and budget as every other cell, then sampled with fixed seeds. The
report (study.md, cells.csv/json, fig_*.png) says claim by claim whether the paper's ordering
holds at this scale: holds / does not hold / inconclusive (95% CIs over seeds overlap).
--latents / --data studies decode samples with the VAE and report the Inception FID against the
training images (their features computed once and cached in $SIT_CACHE/refstats), and
FD-DINOv2 with --dinov2 DIR (a local transformers Dinov2Model folder).
A killed study continues where it stopped; a changed setting is refused for an existing folder.
"""

BUDGET_FLAGS = ("steps", "batch", "seeds", "samples_per_class", "nfe")   # Budget fields, flags generated from them
STUDY_TRAIN_FLAGS = ("dataset", "latents", "data", "vae", "image_size")  # TrainConfig fields of the study's network
ARCH_FIELDS = ("depth", "hidden_size", "num_heads", "patch_size")        # ModelConfig fields of the study's network
SCORING_FLAGS = ("inception", "dinov2", "ref", "ref_images")              # ScoringConfig fields


def _quick_help() -> str:
    from sit.study.cells import QUICK_BUDGET as Q

    return f"the quick budget ({Q.steps} steps x batch {Q.batch}, {Q.seeds} seeds, NFE {Q.nfe}) instead of the default"


@dataclass(frozen=True, kw_only=True)
class StudyOptions:
    """`sit study`'s options that are not fields of the study's records (Budget, TrainConfig,
    ModelConfig, ScoringConfig): which cells, what to do, and the workers (flags from these fields)."""

    out: str = option("studies/demo", "study folder", metavar="DIR")
    quick: bool = option(False, _quick_help, switch=True)
    cells: str | None = option(None, "comma list of cells, 'all' or 'default' (default: default)", metavar="LIST")
    only: tuple[str, ...] = option((), "run only this cell (or one seed of it); repeatable", metavar="CELL[:SEED]",
                                   repeat=True)
    dry_run: bool = option(False, "print every (cell, seed) unit's command and estimated cost, and exit", switch=True)
    list: bool = option(False, "print the cells (and their status in {out}) and exit", switch=True)
    report_only: bool = option(False, "train nothing: write the report from the finished cells", switch=True)
    report: bool = option(True, "write the report after running", flag="--no-report")
    model: str | None = option(None, "network preset (SiT-S/2 ... SiT-XL/8; default: the demo's)", metavar="NAME")
    jobs: int | None = option(None, "worker processes, one (cell, seed) each (default: 2 for the embedded study on "
                              ">= 2 CPU cores, else 1)", metavar="N")
    threads: int | None = option(None, "torch CPU threads per worker (default: the usable cores divided among the "
                                 "{jobs} workers)", metavar="N")


def register(subparsers) -> None:
    from sit.study.cells import DEFAULT_BUDGET, Budget
    from sit.study.scoring_config import ScoringConfig

    p = subparsers.add_parser("study", help="the paper's design-space study (Tables 2-6, Figs. 4-5) with a report",
                              description=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_record_arguments(p, StudyOptions, ("out", "quick"), keep_defaults=True)
    b = p.add_argument_group("budget (every cell the same; default: sit.study.cells.DEFAULT_BUDGET)")
    add_record_arguments(b, Budget, ("steps", "train_minutes"), defaults=DEFAULT_BUDGET)   # from the record's fields
    add_record_arguments(b, Budget, BUDGET_FLAGS[1:], defaults=DEFAULT_BUDGET)
    c = p.add_argument_group("which cells")
    add_record_arguments(c, StudyOptions, ("cells", "only", "dry_run", "list", "report_only", "report"),
                         keep_defaults=True)
    d = p.add_argument_group("data and network (default: the embedded digits demo and its network)")
    # the study's network trains on these TrainConfig fields: their flags as `sit train`'s
    add_record_arguments(d, TrainConfig, STUDY_TRAIN_FLAGS, default_note=default_note, flags=flag_for)
    add_record_arguments(d, ScoringConfig, SCORING_FLAGS)
    add_record_arguments(d, StudyOptions, ("model",), keep_defaults=True)
    add_record_arguments(d, ModelConfig, ARCH_FIELDS)
    add_record_arguments(d, StudyOptions, ("jobs",), keep_defaults=True)
    add_record_arguments(d, TrainConfig, ("device",))
    add_record_arguments(d, StudyOptions, ("threads",), keep_defaults=True)
    p.set_defaults(func=run)


def _base(args):
    """(TrainConfig, ModelConfig) of the study's network and optimiser (`sit.study.run.study_base`)."""
    from sit.study.run import study_base

    train = given_values(args, TrainConfig, (*STUDY_TRAIN_FLAGS, "device"))
    if getattr(args, "threads", None) is not None:
        train["threads"] = args.threads
    arch = given_values(args, ModelConfig, ARCH_FIELDS)
    return study_base(train, arch, args.model)


def _budget(args, out: Path):
    from sit.study.cells import DEFAULT_BUDGET, QUICK_BUDGET, Budget

    b = QUICK_BUDGET if args.quick else DEFAULT_BUDGET
    given = given_values(args, Budget, BUDGET_FLAGS)
    return dataclasses.replace(b, **given)


def build_study(args):
    from sit.study.cells import select_cells
    from sit.study.run import Study

    out = Path(args.out)
    if args.train_minutes is not None and args.steps is not None:
        raise ValueError("give --steps or --train-minutes, not both")
    cfg, mc = _base(args)
    budget = _budget(args, out)
    study = Study(out, cfg, mc, budget, select_cells(args.cells), _scoring(args, cfg))
    if args.train_minutes is not None:
        from sit.study.calibrate import steps_for_minutes

        study = dataclasses.replace(study, budget=dataclasses.replace(
            budget, steps=steps_for_minutes(study, args.train_minutes, log=print), train_minutes=args.train_minutes))
    return study



def _scoring(args, cfg):
    from sit.study.scoring_config import ScoringConfig

    given = given_values(args, ScoringConfig, SCORING_FLAGS)
    if given and cfg.latents is None and cfg.data is None:
        raise ValueError(f"--{next(iter(given)).replace('_', '-')} applies to --latents / --data studies only; the "
                         "embedded study scores with the digit classifier")
    return ScoringConfig(**given)


UNIT_FLAGS = ("out", "quick", "steps", "train_minutes", "batch", "seeds", "samples_per_class", "nfe", "cells",
              "dataset", "latents", "data", "vae", "image_size", "model", "depth", "hidden_size", "num_heads",
              "patch_size", "device", "threads") + SCORING_FLAGS


def _unit_argv(args) -> list[str]:
    """The flags of this study's command line (each unit adds its own --only)."""
    out = ["study"]
    for k in UNIT_FLAGS:
        v = getattr(args, k, None)
        if v is None or v is False:
            continue
        out += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    return out


def _dry_run(study, args, only) -> int:
    import shlex

    from sit.study.run import ASSUMED_TFLOPS, unit_cost

    keep = _unit_argv(args)
    total = 0.0
    units = [(c, s) for c, s in study.units()
             if not only or any(c.name == n and (ss is None or ss == s) for n, ss in only)]
    print(f"sit study --dry-run: {len(units)} (cell, seed) units in {str(study.out)!r}; cost from "
          f"sit.models.sit.forward_flops, hours at an assumed {ASSUMED_TFLOPS:g} TFLOP/s")
    for cell, seed in units:
        c = unit_cost(study, cell)
        total += c["hours_at_assumed"]
        done = " (done)" if study.result_path(cell, seed).is_file() else ""
        print(f"sit {shlex.join(keep + ['--only', f'{cell.name}:{seed}'])}")
        print(f"    # {c['images_seen']:,} images seen; train {c['train_pflop']:.4g} PFLOP, sampling "
              f"{c['sample_pflop']:.4g} PFLOP; ~{c['hours_at_assumed']:.3g} h{done}")
    print(f"sit study --dry-run: total ~{total:.3g} h at {ASSUMED_TFLOPS:g} TFLOP/s; then "
          f"`sit study --out {shlex.quote(str(study.out))} --report-only` merges the results")
    return 0


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
    from sit.folders import require_reachable
    from sit.study.cells import parse_only
    from sit.study.report import write_report
    from sit.study.run import run_study

    require_reachable(args.out)
    if args.report_only:
        from sit.study.records import read_identity

        if read_identity(Path(args.out)) is None:
            raise FileNotFoundError(f"--report-only: no study in {args.out!r} (study_config.json missing)")
        print(f"sit study: report {str(write_report(Path(args.out)))!r}")
        return 0
    study = build_study(args)
    if args.list:
        return _list(study)
    only = [parse_only(s, study.cells, study.budget.seeds) for s in (args.only or [])]
    if args.dry_run:
        return _dry_run(study, args, only)
    run_study(study, only=only or None, log=lambda s: print(s, flush=True), jobs=_jobs(args, study))
    if args.report:
        print(f"sit study: report {str(write_report(study.out))!r}")
    sys.stdout.flush()
    return 0
